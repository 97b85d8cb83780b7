"""PythonOperator: call a function; its return value becomes the task's XCom."""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable
from typing import Any

from flowsched.context import get_current_context
from flowsched.exceptions import DagDefinitionError
from flowsched.operators.base import BaseOperator
from flowsched.operators.branch import BranchMixIn
from flowsched.operators.skip import SkipMixin
from flowsched.xcom_arg import resolve_xcom_args

log = logging.getLogger("flowsched.task")

__all__ = [
    "BranchPythonOperator",
    "PythonOperator",
    "ShortCircuitOperator",
    "call_with_context",
    "get_current_context",
]


def call_with_context(
    func: Callable[..., Any], args: Any, kwargs: dict[str, Any], context: dict[str, Any]
) -> Any:
    """Pass the context keys the function names (``ds``, ``ti``...) or all of them to ``**``."""
    signature = inspect.signature(func)
    accepts_var_kw = any(
        p.kind is inspect.Parameter.VAR_KEYWORD for p in signature.parameters.values()
    )
    extra = {
        key: value
        for key, value in context.items()
        if key not in kwargs and (accepts_var_kw or key in signature.parameters)
    }
    return func(*args, **kwargs, **extra)


def run_callable(
    func: Callable[..., Any], op_args: Any, op_kwargs: dict[str, Any], context: dict[str, Any]
) -> Any:
    """Resolve XCom references in the arguments, then call with the context keys it names."""
    args = resolve_xcom_args(op_args, context)
    kwargs = resolve_xcom_args(op_kwargs, context)
    return call_with_context(func, args, kwargs, context)


class PythonOperator(BaseOperator):
    template_fields = ("templates_dict", "op_args", "op_kwargs")

    def __init__(
        self,
        task_id: str,
        python_callable: Callable[..., Any],
        op_args: list[Any] | tuple[Any, ...] | None = None,
        op_kwargs: dict[str, Any] | None = None,
        templates_dict: dict[str, Any] | None = None,
        templates_exts: list[str] | None = None,
        show_return_value_in_logs: bool = True,
        **kwargs: Any,
    ) -> None:
        if not callable(python_callable):
            raise DagDefinitionError(f"task '{task_id}': python_callable must be callable")
        super().__init__(task_id, **kwargs)
        self.python_callable = python_callable
        self.op_args = list(op_args or [])
        self.op_kwargs = dict(op_kwargs or {})
        # Rendered like any templated field, then handed to the callable as context
        # key ``templates_dict``; templates_exts names which values are template files.
        self.templates_dict = templates_dict
        if templates_exts:
            self.template_ext = tuple(templates_exts)
        self.show_return_value_in_logs = show_return_value_in_logs

    def execute(self, context: dict[str, Any]) -> Any:
        context = {**context, "templates_dict": self.templates_dict}
        result = run_callable(self.python_callable, self.op_args, self.op_kwargs, context)
        if self.show_return_value_in_logs:
            log.info("Done. Returned value was: %s", result)
        return result


class BranchPythonOperator(PythonOperator, BranchMixIn):
    """The callable returns the task id(s) to follow; other direct downstream tasks skip."""

    def execute(self, context: dict[str, Any]) -> Any:
        return self.do_branch(context, super().execute(context))


class ShortCircuitOperator(PythonOperator, SkipMixin):
    """A falsy result skips what follows; a truthy one lets it run.

    With ``ignore_downstream_trigger_rules=True`` (the default) every task downstream
    is skipped; with False only the direct downstream ones, and the others then follow
    their own trigger rules (an ``all_done`` task further down still runs).
    """

    def __init__(
        self, *args: Any, ignore_downstream_trigger_rules: bool = True, **kwargs: Any
    ) -> None:
        super().__init__(*args, **kwargs)
        self.ignore_downstream_trigger_rules = ignore_downstream_trigger_rules

    def execute(self, context: dict[str, Any]) -> Any:
        condition = super().execute(context)
        log.info("Condition result is %s", condition)
        if condition:
            log.info("Proceeding with downstream tasks...")
            return condition
        if self.ignore_downstream_trigger_rules:
            to_skip = self.get_flat_relative_ids(upstream=False)
        else:
            to_skip = self.get_direct_relative_ids(upstream=False)
        log.info("Skipping downstream tasks %s", sorted(to_skip))
        self.skip(tasks=to_skip)
        return condition


def __getattr__(name: str) -> Any:
    """``from flowsched.operators.python import PythonVirtualenvOperator`` (Airflow's path)."""
    if name in ("PythonVirtualenvOperator", "ExternalPythonOperator"):
        from flowsched.operators import virtualenv

        return getattr(virtualenv, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
