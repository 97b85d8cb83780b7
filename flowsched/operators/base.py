"""BaseOperator: one task of a DAG, its retry policy, and the ``>>`` dependency syntax."""

from __future__ import annotations

import functools
from collections.abc import Iterable, Sequence
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from flowsched.callbacks import as_callbacks
from flowsched.exceptions import DagDefinitionError
from flowsched.ids import validate_id
from flowsched.state import TriggerRule, WeightRule

if TYPE_CHECKING:
    from flowsched.dag import DAG
    from flowsched.task_group import TaskGroup


# Per-task settings that default_args may provide, with their defaults.
TASK_DEFAULTS: dict[str, Any] = {
    "retries": 0,
    "retry_delay": timedelta(minutes=5),
    "retry_exponential_backoff": False,
    "max_retry_delay": None,
    "execution_timeout": None,
    "trigger_rule": TriggerRule.ALL_SUCCESS,
    "queue": None,
    "pool": "default_pool",
    "priority_weight": 1,
    "params": None,
    "depends_on_past": False,
    "ignore_first_depends_on_past": True,
    "wait_for_downstream": False,
    "weight_rule": "downstream",
    "pool_slots": 1,
    "max_active_tis_per_dag": None,
    "max_active_tis_per_dagrun": None,
}

WEIGHT_RULES = tuple(rule.value for rule in WeightRule)


def _as_timedelta(name: str, value: Any, task_id: str) -> timedelta | None:
    if value is None or isinstance(value, timedelta):
        return value
    if isinstance(value, int | float):
        return timedelta(seconds=value)
    raise DagDefinitionError(
        f"task '{task_id}': {name} must be a timedelta or seconds, got {value!r}"
    )


def _positive_int(name: str, value: Any, task_id: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise DagDefinitionError(f"task '{task_id}': {name} must be an integer >= 1, got {value!r}")
    return value


class DependencyMixin:
    """``a >> b``, ``[a, b] >> c`` and ``a << b`` for operators, XCom references and groups.

    A task group links its leaves when it is upstream and its roots when it is
    downstream, so each side asks for its own end: :meth:`_upstream_end` and
    :meth:`_downstream_end` (both :meth:`_operators` for a single task).
    """

    def _operators(self) -> list[BaseOperator]:
        raise NotImplementedError

    def _upstream_end(self) -> list[BaseOperator]:
        """The tasks linked when this is upstream of something."""
        return self._operators()

    def _downstream_end(self) -> list[BaseOperator]:
        """The tasks linked when this is downstream of something."""
        return self._operators()

    def __rshift__(self, other: Any) -> Any:
        from flowsched.edgemodifier import Label

        if isinstance(other, Label):
            other.add_upstream(self)
            return other
        for op in self._upstream_end():
            for target in _flatten(other, downstream=True):
                op.set_downstream(target)
        return other

    def __lshift__(self, other: Any) -> Any:
        from flowsched.edgemodifier import Label

        if isinstance(other, Label):
            other.add_downstream(self)
            return other
        for op in self._downstream_end():
            for source in _flatten(other, downstream=False):
                op.set_upstream(source)
        return other

    def __rrshift__(self, other: Any) -> Any:
        self.__lshift__(other)
        return self

    def __rlshift__(self, other: Any) -> Any:
        self.__rshift__(other)
        return self


def _flatten(value: Any, *, downstream: bool) -> list[BaseOperator]:
    """The tasks ``value`` stands for on the ``downstream`` (or upstream) side of an edge."""
    if isinstance(value, DependencyMixin):
        return value._downstream_end() if downstream else value._upstream_end()
    if isinstance(value, Sequence | set):
        out: list[BaseOperator] = []
        for item in value:
            out.extend(_flatten(item, downstream=downstream))
        return out
    raise DagDefinitionError(f"cannot set a dependency on {value!r}: not a task")


class BaseOperator(DependencyMixin):
    """A unit of work; subclasses implement :meth:`execute`.

    ``template_fields`` names attributes rendered with Jinja2 before execution.
    """

    template_fields: Sequence[str] = ()
    # A templated field whose value ends with one of these is a template file's path,
    # looked up in the DAG's template_searchpath and the DAG file's folder.
    template_ext: Sequence[str] = ()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "__init__" in cls.__dict__:
            cls.__init__ = _then_link_xcom_args(cls.__dict__["__init__"])  # type: ignore[method-assign]

    def __init__(
        self,
        task_id: str,
        dag: DAG | None = None,
        *,
        retries: int | None = None,
        retry_delay: timedelta | float | None = None,
        retry_exponential_backoff: bool | None = None,
        max_retry_delay: timedelta | float | None = None,
        execution_timeout: timedelta | float | None = None,
        trigger_rule: str | None = None,
        queue: str | None = None,
        pool: str | None = None,
        priority_weight: int | None = None,
        params: dict[str, Any] | None = None,
        depends_on_past: bool | None = None,
        ignore_first_depends_on_past: bool | None = None,
        wait_for_downstream: bool | None = None,
        weight_rule: str | None = None,
        pool_slots: int | None = None,
        max_active_tis_per_dag: int | None = None,
        max_active_tis_per_dagrun: int | None = None,
        doc: str | None = None,
        doc_md: str | None = None,
        task_display_name: str | None = None,
        owner: str | None = None,
        do_xcom_push: bool = True,
        multiple_outputs: bool = False,
        outlets: Any = None,
        inlets: Any = None,
        on_execute_callback: Any = None,
        on_failure_callback: Any = None,
        on_success_callback: Any = None,
        on_retry_callback: Any = None,
        on_skipped_callback: Any = None,
        task_group: TaskGroup | None = None,
        **unexpected: Any,
    ) -> None:
        from flowsched.dag import DagContext
        from flowsched.task_group import group_default_args, task_group_for

        if unexpected:
            raise DagDefinitionError(
                f"task '{task_id}': unknown argument(s) {', '.join(sorted(unexpected))} "
                f"for {type(self).__name__}"
            )
        validate_id("task_id", task_id, DagDefinitionError)
        dag = dag or DagContext.current()
        # Inside `with TaskGroup("g"):` the id becomes "g.<task_id>", as in Airflow.
        self.task_group = task_group_for(dag, task_group)
        if self.task_group is not None:
            task_id = validate_id("task_id", self.task_group.child_id(task_id), DagDefinitionError)
        self.task_id = task_id
        self.upstream_task_ids: set[str] = set()
        self.downstream_task_ids: set[str] = set()
        self.doc = doc
        self.doc_md = doc_md
        self.task_display_name = task_display_name or task_id
        self.owner = owner
        self.do_xcom_push = bool(do_xcom_push)
        self.multiple_outputs = bool(multiple_outputs)
        # Datasets among the outlets are updated when a try succeeds; inlets: no effect.
        self.outlets = list(outlets) if isinstance(outlets, list | tuple) else [outlets]
        self.outlets = [outlet for outlet in self.outlets if outlet is not None]
        self.inlets = list(inlets or [])
        given = {
            "retries": retries,
            "retry_delay": retry_delay,
            "retry_exponential_backoff": retry_exponential_backoff,
            "max_retry_delay": max_retry_delay,
            "execution_timeout": execution_timeout,
            "trigger_rule": trigger_rule,
            "queue": queue,
            "pool": pool,
            "priority_weight": priority_weight,
            "params": params,
            "depends_on_past": depends_on_past,
            "ignore_first_depends_on_past": ignore_first_depends_on_past,
            "wait_for_downstream": wait_for_downstream,
            "weight_rule": weight_rule,
            "pool_slots": pool_slots,
            "max_active_tis_per_dag": max_active_tis_per_dag,
            "max_active_tis_per_dagrun": max_active_tis_per_dagrun,
        }
        defaults = group_default_args(dag, self.task_group)
        resolved = {
            key: given[key] if given[key] is not None else defaults.get(key, fallback)
            for key, fallback in TASK_DEFAULTS.items()
        }
        self.retries = int(resolved["retries"])
        if self.retries < 0:
            raise DagDefinitionError(f"task '{task_id}': retries must be >= 0")
        self.retry_delay = _as_timedelta("retry_delay", resolved["retry_delay"], task_id)
        self.retry_exponential_backoff = bool(resolved["retry_exponential_backoff"])
        self.max_retry_delay = _as_timedelta(
            "max_retry_delay", resolved["max_retry_delay"], task_id
        )
        self.execution_timeout = _as_timedelta(
            "execution_timeout", resolved["execution_timeout"], task_id
        )
        try:
            self.trigger_rule = TriggerRule(resolved["trigger_rule"])
        except ValueError:
            known = ", ".join(rule.value for rule in TriggerRule)
            raise DagDefinitionError(
                f"task '{task_id}': unknown trigger_rule {resolved['trigger_rule']!r} "
                f"(known: {known})"
            ) from None
        self.queue = resolved["queue"]
        self.pool = str(resolved["pool"])
        self.priority_weight = int(resolved["priority_weight"])
        self.params = dict(resolved["params"] or {})
        given_callbacks = {
            "on_execute_callback": on_execute_callback,
            "on_failure_callback": on_failure_callback,
            "on_success_callback": on_success_callback,
            "on_retry_callback": on_retry_callback,
            "on_skipped_callback": on_skipped_callback,
        }
        for name, value in given_callbacks.items():  # see flowsched.callbacks
            value = value if value is not None else defaults.get(name)
            setattr(self, name, as_callbacks(value, f"task '{task_id}'", name))
        self._set_run_level(task_id, resolved)
        self.dag: DAG | None = None
        if dag is not None:
            dag.add_task(self)
        if self.task_group is not None:
            self.task_group.add(self)

    def _set_run_level(self, task_id: str, resolved: dict[str, Any]) -> None:
        """Past-dependence, concurrency and priority settings, checked as Airflow does."""
        # wait_for_downstream implies depends_on_past, as in Airflow.
        self.wait_for_downstream = bool(resolved["wait_for_downstream"])
        self.depends_on_past = bool(resolved["depends_on_past"]) or self.wait_for_downstream
        self.ignore_first_depends_on_past = bool(resolved["ignore_first_depends_on_past"])
        weight_rule = str(getattr(resolved["weight_rule"], "value", resolved["weight_rule"]))
        if weight_rule not in WEIGHT_RULES:
            raise DagDefinitionError(
                f"task '{task_id}': unknown weight_rule {weight_rule!r} "
                f"(known: {', '.join(WEIGHT_RULES)})"
            )
        self.weight_rule = weight_rule
        self.pool_slots = _positive_int("pool_slots", resolved["pool_slots"], task_id)
        for name in ("max_active_tis_per_dag", "max_active_tis_per_dagrun"):
            value = resolved[name]
            setattr(self, name, None if value is None else _positive_int(name, value, task_id))

    @classmethod
    def partial(cls, **kwargs: Any) -> Any:
        """Arguments shared by every copy of a mapped task; ``.expand(...)`` maps the rest
        (Airflow's dynamic task mapping, see :mod:`flowsched.mapped_operator`)."""
        from flowsched.mapped_operator import OperatorPartial

        return OperatorPartial(cls, kwargs)

    # -- dependencies -------------------------------------------------------
    def _operators(self) -> list[BaseOperator]:
        return [self]

    def _same_dag(self, other: BaseOperator) -> DAG:
        if self.dag is None or other.dag is None:
            raise DagDefinitionError(
                f"tasks '{self.task_id}' and '{other.task_id}' must belong to a DAG "
                "before they are linked"
            )
        if self.dag is not other.dag:
            raise DagDefinitionError(
                f"cannot link '{self.task_id}' ({self.dag.dag_id}) to "
                f"'{other.task_id}' ({other.dag.dag_id}): tasks of different DAGs"
            )
        return self.dag

    def set_downstream(self, other: BaseOperator | Iterable[BaseOperator]) -> None:
        for target in _flatten(other, downstream=True):
            self._same_dag(target)
            self.downstream_task_ids.add(target.task_id)
            target.upstream_task_ids.add(self.task_id)

    def set_upstream(self, other: BaseOperator | Iterable[BaseOperator]) -> None:
        for source in _flatten(other, downstream=False):
            source.set_downstream(self)

    @property
    def upstream_list(self) -> list[BaseOperator]:
        return [self._task_in_dag(task_id) for task_id in sorted(self.upstream_task_ids)]

    @property
    def downstream_list(self) -> list[BaseOperator]:
        return [self._task_in_dag(task_id) for task_id in sorted(self.downstream_task_ids)]

    def _task_in_dag(self, task_id: str) -> BaseOperator:
        assert self.dag is not None
        return self.dag.tasks[task_id]

    def get_direct_relative_ids(self, upstream: bool = False) -> set[str]:
        return set(self.upstream_task_ids if upstream else self.downstream_task_ids)

    def get_direct_relatives(self, upstream: bool = False) -> list[BaseOperator]:
        return self.upstream_list if upstream else self.downstream_list

    def get_flat_relative_ids(self, upstream: bool = False) -> set[str]:
        """Every task reachable downstream (or upstream) of this one, not itself."""
        found: set[str] = set()
        pending = list(self.get_direct_relative_ids(upstream))
        while pending:
            task_id = pending.pop()
            if task_id not in found:
                found.add(task_id)
                pending.extend(self._task_in_dag(task_id).get_direct_relative_ids(upstream))
        return found

    def get_flat_relatives(self, upstream: bool = False) -> list[BaseOperator]:
        return [
            self._task_in_dag(task_id) for task_id in sorted(self.get_flat_relative_ids(upstream))
        ]

    def set_xcomargs_dependencies(self) -> None:
        """An XComArg in a templated field makes its task an upstream, as in Airflow."""
        from flowsched.xcom_arg import find_xcom_args

        for name in self.template_fields:
            for reference in find_xcom_args(getattr(self, name, None)):
                reference.operator.set_downstream(self)

    @property
    def output(self) -> Any:
        """This task's return value, for passing to downstream tasks."""
        from flowsched.xcom_arg import XComArg

        return XComArg(self)

    # -- execution ----------------------------------------------------------
    def execute(self, context: dict[str, Any]) -> Any:
        raise NotImplementedError(f"{type(self).__name__} must implement execute()")

    def on_kill(self) -> None:
        """Called when the try is stopped from outside; stop child processes here."""

    def render_template_fields(self, context: dict[str, Any]) -> dict[str, Any]:
        """Render ``template_fields`` in place; returns what was rendered (for the record)."""
        rendered: dict[str, Any] = {}
        for name in self.template_fields:
            value = self.render_template(getattr(self, name), context)
            setattr(self, name, value)
            rendered[name] = value
        return rendered

    def render_template(self, content: Any, context: dict[str, Any]) -> Any:
        """Render one value with this task's DAG settings (Airflow's method of the name)."""
        from flowsched.templating import render_value, template_environment

        context = {**context, **(self.dag.user_defined_macros if self.dag else {})}
        return render_value(content, context, template_environment(self.dag), self.template_ext)

    def retry_delay_for(self, try_number: int) -> timedelta:
        """Delay before the try after ``try_number``; exponential if asked, capped."""
        delay = self.retry_delay or timedelta(0)
        return compute_retry_delay(
            delay, try_number, self.retry_exponential_backoff, self.max_retry_delay
        )

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.task_id}>"


def _then_link_xcom_args(init: Any) -> Any:
    """Once the outermost ``__init__`` has set every field, link XComArgs found in them."""

    @functools.wraps(init)
    def wrapper(self: BaseOperator, *args: Any, **kwargs: Any) -> None:
        depth = self.__dict__.get("_init_depth", 0)
        self.__dict__["_init_depth"] = depth + 1
        try:
            init(self, *args, **kwargs)
        finally:
            self.__dict__["_init_depth"] = depth
        if depth == 0 and getattr(self, "dag", None) is not None:
            self.set_xcomargs_dependencies()

    return wrapper


def compute_retry_delay(
    base: timedelta, try_number: int, exponential: bool, cap: timedelta | None
) -> timedelta:
    delay = base * 2 ** max(try_number - 1, 0) if exponential else base
    if cap is not None and delay > cap:
        delay = cap
    return delay
