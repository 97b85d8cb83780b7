"""Read-only view of a serialized DAG: what the scheduler and webserver work from.

They never import user code; they read the JSON the DAG processor stored with
each :class:`~flowsched.db.models.DagVersion`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import cached_property
from typing import Any

from flowsched.operators.base import compute_retry_delay
from flowsched.schedules import Schedule, schedule_from_dict
from flowsched.state import TriggerRule
from flowsched.timezone import parse_timezone


def _delta(seconds: float | None) -> timedelta | None:
    return None if seconds is None else timedelta(seconds=seconds)


@dataclass(frozen=True)
class TaskSpec:
    task_id: str
    operator: str
    upstream: tuple[str, ...]
    retries: int
    retry_delay: timedelta | None
    retry_exponential_backoff: bool
    max_retry_delay: timedelta | None
    execution_timeout: timedelta | None
    trigger_rule: TriggerRule
    queue: str | None
    pool: str
    priority_weight: int
    plugin_files: tuple[tuple[str, str], ...] = ()
    # An EmptyOperator: the scheduler marks it successful without a worker.
    is_empty: bool = False
    weight_rule: str = "downstream"
    pool_slots: int = 1
    depends_on_past: bool = False
    ignore_first_depends_on_past: bool = True
    wait_for_downstream: bool = False
    max_active_tis_per_dag: int | None = None
    max_active_tis_per_dagrun: int | None = None
    # A mapped task: {"kind": "expand"|"expand_kwargs", "args": [{"name", "length"|"xcom"}]}.
    mapped: dict[str, Any] | None = None

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TaskSpec:
        return cls(
            task_id=data["task_id"],
            operator=data["operator"],
            upstream=tuple(data["upstream"]),
            retries=data["retries"],
            retry_delay=_delta(data["retry_delay"]),
            retry_exponential_backoff=data["retry_exponential_backoff"],
            max_retry_delay=_delta(data["max_retry_delay"]),
            execution_timeout=_delta(data["execution_timeout"]),
            trigger_rule=TriggerRule(data["trigger_rule"]),
            queue=data["queue"],
            pool=data["pool"],
            priority_weight=data["priority_weight"],
            plugin_files=tuple(sorted(data.get("plugin_files", {}).items())),
            is_empty=data.get("is_empty", False),
            # DAGs serialized before these existed read as Airflow's defaults.
            weight_rule=data.get("weight_rule", "downstream"),
            pool_slots=data.get("pool_slots", 1),
            depends_on_past=data.get("depends_on_past", False),
            ignore_first_depends_on_past=data.get("ignore_first_depends_on_past", True),
            wait_for_downstream=data.get("wait_for_downstream", False),
            max_active_tis_per_dag=data.get("max_active_tis_per_dag"),
            max_active_tis_per_dagrun=data.get("max_active_tis_per_dagrun"),
            mapped=data.get("mapped"),
        )

    def retry_delay_for(self, try_number: int) -> timedelta:
        return compute_retry_delay(
            self.retry_delay or timedelta(0),
            try_number,
            self.retry_exponential_backoff,
            self.max_retry_delay,
        )


@dataclass(frozen=True)
class GroupSpec:
    """A task group as the UI draws it; the scheduler ignores groups."""

    group_id: str
    label: str
    parent_group_id: str | None
    tooltip: str

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> GroupSpec:
        return cls(data["group_id"], data["label"], data["parent_group_id"], data["tooltip"])


class SerializedDAG:
    def __init__(self, data: dict[str, Any]) -> None:
        self.data = data
        self.dag_id: str = data["dag_id"]
        self.fileloc: str = data.get("fileloc", "")
        self.timezone = parse_timezone(data["timezone"])
        self.catchup: bool = data["catchup"]
        self.max_active_runs: int = data["max_active_runs"]
        self.max_active_tasks: int = data.get("max_active_tasks", 16)
        self.start_date = _parse_dt(data.get("start_date"))
        self.end_date = _parse_dt(data.get("end_date"))
        self.dagrun_timeout = _delta(data.get("dagrun_timeout"))
        # {upstream: {downstream: {"label": ...}}} from Label edge modifiers.
        self.edge_info: dict[str, dict[str, dict[str, str]]] = data.get("edge_info", {})
        self.tasks: dict[str, TaskSpec] = {
            task["task_id"]: TaskSpec.from_dict(task) for task in data["tasks"]
        }

    @cached_property
    def task_groups(self) -> dict[str, GroupSpec]:
        """Groups by full id, parents before children (none in DAGs serialized before groups)."""
        groups = (GroupSpec.from_dict(g) for g in self.data.get("task_groups", []))
        return {group.group_id: group for group in groups}

    @cached_property
    def task_group_of(self) -> dict[str, str | None]:
        """task_id -> the innermost group holding it, or None."""
        return {task["task_id"]: task.get("task_group_id") for task in self.data["tasks"]}

    def groups_of(self, task_id: str) -> list[str]:
        """The groups holding ``task_id``, outermost first."""
        chain: list[str] = []
        group_id = self.task_group_of.get(task_id)
        while group_id is not None:
            chain.insert(0, group_id)
            group_id = self.task_groups[group_id].parent_group_id
        return chain

    @cached_property
    def schedule(self) -> Schedule:
        return schedule_from_dict(self.data.get("schedule"), self.timezone)

    @cached_property
    def downstream(self) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {task_id: [] for task_id in self.tasks}
        for task in self.tasks.values():
            for upstream in task.upstream:
                out[upstream].append(task.task_id)
        return out

    @cached_property
    def upstream(self) -> dict[str, tuple[str, ...]]:
        return {task_id: task.upstream for task_id, task in self.tasks.items()}

    @cached_property
    def priority_weight_total(self) -> dict[str, int]:
        """Each task's effective priority by its ``weight_rule``, as Airflow computes it:
        its own weight plus that of every task reachable downstream (``downstream``,
        the default: the tasks that unblock most work go first), or upstream, or alone.
        """
        return {
            task_id: task.priority_weight
            + sum(self.tasks[other].priority_weight for other in self._relatives(task))
            for task_id, task in self.tasks.items()
        }

    def _relatives(self, task: TaskSpec) -> set[str]:
        if task.weight_rule == "absolute":
            return set()
        edges = self.downstream if task.weight_rule == "downstream" else self.upstream
        found: set[str] = set()
        pending = list(edges[task.task_id])
        while pending:
            task_id = pending.pop()
            if task_id not in found:
                found.add(task_id)
                pending.extend(edges[task_id])
        return found

    def topological_order(self) -> list[str]:
        return list(self._topological_order)

    @cached_property
    def _topological_order(self) -> tuple[str, ...]:
        order: list[str] = []
        indegree = {task_id: len(task.upstream) for task_id, task in self.tasks.items()}
        ready = sorted(task_id for task_id, degree in indegree.items() if degree == 0)
        while ready:
            task_id = ready.pop(0)
            order.append(task_id)
            for child in sorted(self.downstream[task_id]):
                indegree[child] -= 1
                if indegree[child] == 0:
                    ready.append(child)
        return tuple(order)


def _parse_dt(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None
