"""BaseNotifier as in Airflow 2.6+: an instance is a callback; templated fields are
rendered with Jinja from the callback's context before :meth:`notify` runs."""

from __future__ import annotations

import copy
import logging
from collections.abc import Sequence
from typing import Any

log = logging.getLogger("flowsched.notifications")

# What a notifier says unless told otherwise: works for task and run callbacks alike.
DEFAULT_TEXT = (
    "flowsched: {% if ti %}task {{ dag.dag_id }}.{{ ti.task_id }} (try {{ ti.try_number }}) "
    "{{ ti.state }}{% else %}DAG {{ dag.dag_id }} run {{ dag_run.state }}{% endif %} "
    "in run {{ run_id }}{% if reason %}: {{ reason }}{% endif %}"
    "{% if exception %} ({{ exception }}){% endif %}"
)


class BaseNotifier:
    """Subclasses set ``template_fields`` and implement :meth:`notify`.

    Each call renders a copy of the notifier, so one instance (say, in
    ``default_args``) serves every task and every call with its own context.
    """

    template_fields: Sequence[str] = ()
    template_ext: Sequence[str] = ()

    def notify(self, context: dict[str, Any]) -> None:
        raise NotImplementedError(f"{type(self).__name__} must implement notify()")

    def render_template_fields(self, context: dict[str, Any]) -> None:
        """Render ``template_fields`` in place, with the DAG's template settings."""
        from flowsched.templating import render_value, template_environment

        environment = template_environment(context.get("dag"))
        for name in self.template_fields:
            value = getattr(self, name)
            setattr(self, name, render_value(value, context, environment, self.template_ext))

    def __call__(self, *args: Any) -> None:
        """As Airflow: a failed notification is logged, never raised into the caller."""
        if len(args) != 1 or not isinstance(args[0], dict):
            raise TypeError(f"{type(self).__name__} is called with one context dict")
        context = args[0]
        rendered = copy.copy(self)
        try:
            rendered.render_template_fields(context)
            rendered.notify(context)
        except Exception as exc:
            log.exception("Failed to send notification (%s): %s", type(self).__name__, exc)
