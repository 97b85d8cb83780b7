"""The DAG: a named graph of tasks with a schedule.

A DAG object lives only inside the process that imported its file. What the
scheduler and webserver use is its serialized form (:mod:`flowsched.serialization`),
so they never execute user code, and workers import the file itself only after
checking its fingerprint.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, ClassVar

import jinja2

from flowsched.callbacks import as_callbacks
from flowsched.datasets import outlet_datasets
from flowsched.exceptions import ConfigError, CycleError, DagDefinitionError, DuplicateTaskIdError
from flowsched.ids import validate_id
from flowsched.params import check_definition, param_values, serialize_params
from flowsched.schedules import Schedule, make_schedule
from flowsched.timezone import default_timezone, is_aware, to_utc, zone_of

if TYPE_CHECKING:
    from flowsched.operators.base import BaseOperator
    from flowsched.task_group import TaskGroup


class DagContext:
    """The DAG that ``with DAG(...):`` makes current, so tasks attach themselves."""

    _stack: ClassVar[list[DAG]] = []
    # Every DAG created while a file is imported; the loader reads this.
    created: ClassVar[list[DAG]] = []

    @classmethod
    def current(cls) -> DAG | None:
        return cls._stack[-1] if cls._stack else None


class DAG:
    def __init__(
        self,
        dag_id: str,
        schedule: Any = None,
        start_date: datetime | None = None,
        end_date: datetime | None = None,
        catchup: bool = False,
        max_active_runs: int = 16,
        max_active_tasks: int = 16,
        default_args: dict[str, Any] | None = None,
        tags: list[str] | None = None,
        description: str | None = None,
        params: dict[str, Any] | None = None,
        *,
        schedule_interval: Any = None,
        dagrun_timeout: timedelta | None = None,
        doc_md: str | None = None,
        dag_display_name: str | None = None,
        template_searchpath: str | Iterable[str] | None = None,
        template_undefined: type[jinja2.Undefined] = jinja2.StrictUndefined,
        user_defined_macros: dict[str, Any] | None = None,
        user_defined_filters: dict[str, Any] | None = None,
        render_template_as_native_obj: bool = False,
        jinja_environment_kwargs: dict[str, Any] | None = None,
        orientation: str = "LR",
        default_view: str = "grid",
        owner_links: dict[str, str] | None = None,
        on_success_callback: Any = None,
        on_failure_callback: Any = None,
        is_paused_upon_creation: bool | None = None,
    ) -> None:
        validate_id("dag_id", dag_id, DagDefinitionError)
        self.dag_id = dag_id
        self.default_args = dict(default_args or {})
        if schedule is None and schedule_interval is not None:
            schedule = schedule_interval  # Airflow 2's older name for `schedule`
        self.timezone = default_timezone()
        start_date = start_date or self.default_args.get("start_date")
        self.start_date = self._aware(start_date, "start_date")
        self.end_date = self._aware(end_date or self.default_args.get("end_date"), "end_date")
        if self.start_date and self.start_date.tzinfo is not None and is_aware(self.start_date):
            try:
                self.timezone = zone_of(self.start_date)
            except ConfigError as exc:
                raise DagDefinitionError(f"DAG '{dag_id}': start_date: {exc}") from None
        try:
            self.schedule: Schedule = make_schedule(schedule, self.timezone)
        except DagDefinitionError as exc:
            raise DagDefinitionError(f"DAG '{dag_id}': {exc}") from None
        if self.schedule.kind not in ("none", "dataset") and self.start_date is None:
            raise DagDefinitionError(f"DAG '{dag_id}': a scheduled DAG needs a start_date")
        self.catchup = bool(catchup)
        if int(max_active_runs) < 1:
            raise DagDefinitionError(f"DAG '{dag_id}': max_active_runs must be >= 1")
        self.max_active_runs = int(max_active_runs)
        if isinstance(max_active_tasks, bool) or not isinstance(max_active_tasks, int):
            raise DagDefinitionError(
                f"DAG '{dag_id}': max_active_tasks must be an integer, got {max_active_tasks!r}"
            )
        if max_active_tasks < 1:
            raise DagDefinitionError(f"DAG '{dag_id}': max_active_tasks must be >= 1")
        # Tries of this DAG queued or running at once, across all its runs (Airflow's name).
        self.max_active_tasks = max_active_tasks
        self.tags = list(tags or [])
        self.description = description
        self.params = dict(params or {})
        check_definition(dag_id, self.params, scheduled=self.schedule.kind != "none")
        if dagrun_timeout is not None and not isinstance(dagrun_timeout, timedelta):
            raise DagDefinitionError(
                f"DAG '{dag_id}': dagrun_timeout must be a timedelta, got {dagrun_timeout!r}"
            )
        self.dagrun_timeout = dagrun_timeout
        self.doc_md = doc_md
        self.dag_display_name = dag_display_name or dag_id
        if isinstance(template_searchpath, str):
            template_searchpath = [template_searchpath]
        self.template_searchpath = list(template_searchpath or [])
        self.template_undefined = template_undefined
        self.user_defined_macros = dict(user_defined_macros or {})
        self.user_defined_filters = dict(user_defined_filters or {})
        self.render_template_as_native_obj = bool(render_template_as_native_obj)
        self.jinja_environment_kwargs = dict(jinja_environment_kwargs or {})
        # Graph layout and default page: accepted for Airflow DAG files, no effect here.
        self.orientation = orientation
        self.default_view = default_view
        self.owner_links = dict(owner_links or {})
        # Run callbacks (flowsched.callbacks): run by the callback runner, never the scheduler.
        where = f"DAG '{dag_id}'"
        self.on_success_callback = as_callbacks(on_success_callback, where, "on_success_callback")
        self.on_failure_callback = as_callbacks(on_failure_callback, where, "on_failure_callback")
        # None: [core] dags_are_paused_at_creation decides, as in Airflow.
        self.is_paused_upon_creation = (
            None if is_paused_upon_creation is None else bool(is_paused_upon_creation)
        )
        self.fileloc: str | None = None
        self.tasks: dict[str, BaseOperator] = {}
        # Every TaskGroup of this DAG by its full id, parents before children.
        self.task_groups: dict[str, TaskGroup] = {}
        # {upstream id: {downstream id: {"label": ...}}}, as Airflow's DAG.edge_info.
        self.edge_info: dict[str, dict[str, dict[str, str]]] = {}
        DagContext.created.append(self)

    def _aware(self, value: datetime | None, name: str) -> datetime | None:
        if value is None:
            return None
        if isinstance(value, datetime) is False:
            raise DagDefinitionError(
                f"DAG '{self.dag_id}': {name} must be a datetime, got {value!r}"
            )
        if not is_aware(value):
            # Naive wall-clock time in a DAG file means the cluster's zone.
            value = value.replace(tzinfo=self.timezone)
        return value

    def __enter__(self) -> DAG:
        DagContext._stack.append(self)
        return self

    def __exit__(self, *exc: object) -> None:
        DagContext._stack.pop()

    def add_task(self, task: BaseOperator) -> None:
        if task.task_id in self.tasks and self.tasks[task.task_id] is not task:
            raise DuplicateTaskIdError(f"DAG '{self.dag_id}': duplicate task_id '{task.task_id}'")
        if task.task_id in self.task_groups:
            raise DuplicateTaskIdError(
                f"DAG '{self.dag_id}': task_id '{task.task_id}' is already a task group's id"
            )
        task.dag = self
        self.tasks[task.task_id] = task

    def set_edge_info(self, upstream_id: str, downstream_id: str, info: dict[str, str]) -> None:
        self.edge_info.setdefault(upstream_id, {})[downstream_id] = dict(info)

    def get_edge_info(self, upstream_id: str, downstream_id: str) -> dict[str, str]:
        return self.edge_info.get(upstream_id, {}).get(downstream_id, {})

    def get_template_env(self) -> jinja2.Environment:
        """The Jinja environment tasks of this DAG render with (searchpath, undefined, macros)."""
        from flowsched.templating import template_environment

        return template_environment(self)

    def get_task(self, task_id: str) -> BaseOperator:
        return self.tasks[task_id]

    @property
    def task_ids(self) -> list[str]:
        return list(self.tasks)

    def check_cycles(self) -> None:
        """Raise CycleError naming the cycle, e.g. ``a -> b -> c -> a``."""
        white, grey, black = 0, 1, 2
        color = dict.fromkeys(self.tasks, white)
        for root in sorted(self.tasks):
            if color[root] != white:
                continue
            path: list[str] = []
            stack: list[tuple[str, list[str]]] = [
                (root, sorted(self.tasks[root].downstream_task_ids))
            ]
            color[root] = grey
            path.append(root)
            while stack:
                node, children = stack[-1]
                if children:
                    child = children.pop(0)
                    if color[child] == grey:
                        cycle = [*path[path.index(child) :], child]
                        raise CycleError(f"DAG '{self.dag_id}' has a cycle: {' -> '.join(cycle)}")
                    if color[child] == white:
                        color[child] = grey
                        path.append(child)
                        stack.append((child, sorted(self.tasks[child].downstream_task_ids)))
                else:
                    color[node] = black
                    path.pop()
                    stack.pop()

    def validate(self) -> None:
        for task in self.tasks.values():
            for other in task.upstream_task_ids | task.downstream_task_ids:
                if other not in self.tasks:
                    raise DagDefinitionError(
                        f"DAG '{self.dag_id}': task '{task.task_id}' is linked to unknown '{other}'"
                    )
        self.check_cycles()

    def to_dict(self) -> dict[str, Any]:
        """The serialized form the scheduler and webserver use; validates first."""
        self.validate()

        from flowsched.plugins import plugin_file_of
        from flowsched.task_group import serialize_task_groups

        def seconds(value: timedelta | None) -> float | None:
            return None if value is None else value.total_seconds()

        def plugin_files(task: BaseOperator) -> dict[str, str]:
            found = plugin_file_of(task)
            return dict([found]) if found else {}

        tasks_plugins = {task_id: plugin_files(task) for task_id, task in self.tasks.items()}
        all_plugins = {k: v for files in tasks_plugins.values() for k, v in files.items()}

        return {
            "dag_id": self.dag_id,
            "schedule": self.schedule.to_dict(),
            "schedule_description": self.schedule.describe(),
            "timezone": str(self.timezone),
            "start_date": to_utc(self.start_date).isoformat() if self.start_date else None,
            "end_date": to_utc(self.end_date).isoformat() if self.end_date else None,
            "catchup": self.catchup,
            "is_paused_upon_creation": self.is_paused_upon_creation,
            "max_active_runs": self.max_active_runs,
            "max_active_tasks": self.max_active_tasks,
            "tags": self.tags,
            "description": self.description,
            "params": param_values(self.params),
            "param_specs": serialize_params(self.params),
            "dagrun_timeout": seconds(self.dagrun_timeout),
            "doc_md": self.doc_md,
            "dag_display_name": self.dag_display_name,
            "edge_info": self.edge_info,
            "task_groups": serialize_task_groups(self),
            "plugin_fingerprints": dict(sorted(all_plugins.items())),
            "has_on_success_callback": bool(self.on_success_callback),
            "has_on_failure_callback": bool(self.on_failure_callback),
            "tasks": [
                {
                    "task_id": task.task_id,
                    "operator": getattr(task, "operator_name", type(task).__name__),
                    # Dynamic task mapping: lengths and XCom references, never values.
                    "mapped": task.mapping_spec() if hasattr(task, "mapping_spec") else None,
                    "upstream": sorted(task.upstream_task_ids),
                    "retries": task.retries,
                    "retry_delay": seconds(task.retry_delay),
                    "retry_exponential_backoff": task.retry_exponential_backoff,
                    "max_retry_delay": seconds(task.max_retry_delay),
                    "execution_timeout": seconds(task.execution_timeout),
                    "trigger_rule": task.trigger_rule.value,
                    "queue": task.queue,
                    "pool": task.pool,
                    "priority_weight": task.priority_weight,
                    "weight_rule": task.weight_rule,
                    "pool_slots": task.pool_slots,
                    "depends_on_past": task.depends_on_past,
                    "ignore_first_depends_on_past": task.ignore_first_depends_on_past,
                    "wait_for_downstream": task.wait_for_downstream,
                    "max_active_tis_per_dag": task.max_active_tis_per_dag,
                    "max_active_tis_per_dagrun": task.max_active_tis_per_dagrun,
                    "template_fields": list(task.template_fields),
                    "doc": task.doc or task.doc_md,
                    "task_display_name": task.task_display_name,
                    "is_empty": _is_empty(task),
                    "outlets": [dataset.to_dict() for dataset in outlet_datasets(task.outlets)],
                    "plugin_files": tasks_plugins[task.task_id],
                    "task_group_id": task.task_group.group_id if task.task_group else None,
                }
                for task in self.tasks.values()
            ],
        }

    def __repr__(self) -> str:
        return f"<DAG {self.dag_id}>"


def _is_empty(task: BaseOperator) -> bool:
    """EmptyOperators are marked successful by the scheduler, never sent to a worker."""
    from flowsched.callbacks import TASK_CALLBACKS
    from flowsched.operators.empty import EmptyOperator

    # With callbacks or dataset outlets it goes to a worker, as in Airflow: the
    # callbacks run there, and its dataset events are recorded there.
    return (
        isinstance(task, EmptyOperator)
        and not any(getattr(task, name) for name in TASK_CALLBACKS)
        and not outlet_datasets(task.outlets)
    )
