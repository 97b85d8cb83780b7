"""Concurrency limits a scheduled try must fit in before it is queued.

As Airflow's queue dependencies: pool slots (a try takes ``pool_slots`` of its
pool), ``max_active_tasks`` per DAG (across all its runs), and per task
``max_active_tis_per_dag`` and ``max_active_tis_per_dagrun``. Counts are of
tries queued or running, read once per scheduling pass and updated as tries
are queued within it; each limit that holds a try back gives Airflow's reason.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from flowsched.db.models import DagVersion, Pool, TaskInstance
from flowsched.serialization import SerializedDAG, TaskSpec
from flowsched.state import TaskState

ACTIVE = (TaskState.QUEUED.value, TaskState.RUNNING.value)

# How many pool slots a queued or running try takes: from its DAG version's spec.
SlotsOf = Callable[[int | None, str], int]


@dataclass
class Concurrency:
    pool_slots: dict[str, int]
    pool_used: Counter[str] = field(default_factory=Counter)
    dag_active: Counter[str] = field(default_factory=Counter)
    task_active: Counter[tuple[str, str]] = field(default_factory=Counter)
    task_run_active: Counter[tuple[int, str]] = field(default_factory=Counter)

    @classmethod
    def load(
        cls, session: Session, dag_ids: Iterable[str], slots_of: SlotsOf, *, lock: bool = True
    ) -> Concurrency:
        """Counts as they are now. The scheduler locks the pool rows (schedulers take
        turns counting); a reader showing the counts passes ``lock=False``."""
        query = select(Pool).with_for_update() if lock else select(Pool)
        pools = {pool.name: pool.slots for pool in session.scalars(query)}
        limits = cls(pool_slots=pools)
        dag_ids = set(dag_ids)
        # One read of the tries queued or running (the state index: never the history,
        # however long), counted for pools and, for ``dag_ids``, per DAG, task and run.
        by_try = (
            TaskInstance.pool,
            TaskInstance.dag_version_id,
            TaskInstance.dag_id,
            TaskInstance.task_id,
            TaskInstance.dag_run_id,
        )
        for pool, version_id, dag_id, task_id, run_id, count in session.execute(
            select(*by_try, func.count()).where(TaskInstance.state.in_(ACTIVE)).group_by(*by_try)
        ):
            limits.pool_used[pool] += count * slots_of(version_id, task_id)
            if dag_id in dag_ids:
                limits.dag_active[dag_id] += count
                limits.task_active[dag_id, task_id] += count
                limits.task_run_active[run_id, task_id] += count
        return limits

    def blocker(self, dag: SerializedDAG, spec: TaskSpec, dag_run_id: int) -> str | None:
        """Why a try of ``spec`` in run ``dag_run_id`` may not be queued now, or None."""
        total = self.pool_slots.get(spec.pool)
        if total is None:
            return f"pool '{spec.pool}' does not exist"
        open_slots = total - self.pool_used[spec.pool]
        if spec.pool_slots > total:
            return (
                f"requested pool slots ({spec.pool_slots}) are greater than total pool slots "
                f"({total}) for pool '{spec.pool}'"
            )
        if open_slots < spec.pool_slots:
            return (
                f"Not scheduling since there are {open_slots} open slots in pool "
                f"'{spec.pool}' and require {spec.pool_slots} pool slots"
            )
        if self.dag_active[dag.dag_id] >= dag.max_active_tasks:
            return (
                f"The maximum number of running tasks ({dag.max_active_tasks}) for this "
                f"task's DAG '{dag.dag_id}' has been reached."
            )
        per_dag = spec.max_active_tis_per_dag
        if per_dag is not None and self.task_active[dag.dag_id, spec.task_id] >= per_dag:
            return f"The max task concurrency ({per_dag}) has been reached."
        per_run = spec.max_active_tis_per_dagrun
        if per_run is not None and self.task_run_active[dag_run_id, spec.task_id] >= per_run:
            return f"The max task concurrency per run ({per_run}) has been reached."
        return None

    def take(self, dag: SerializedDAG, spec: TaskSpec, dag_run_id: int) -> None:
        """Count a try just queued."""
        self.pool_used[spec.pool] += spec.pool_slots
        self.dag_active[dag.dag_id] += 1
        self.task_active[dag.dag_id, spec.task_id] += 1
        self.task_run_active[dag_run_id, spec.task_id] += 1


def slots_reader(
    session: Session, load_version: Callable[[int], SerializedDAG | None] | None = None
) -> SlotsOf:
    """Pool slots of queued/running tries, from the DAG versions they were queued with.

    ``load_version`` reads a version's serialized DAG (the scheduler passes its own
    cache, kept across passes); by default each version is read once per reader.
    """
    if load_version is None:
        cache: dict[int, SerializedDAG | None] = {}

        def load_version(version_id: int) -> SerializedDAG | None:
            if version_id not in cache:
                serialized = session.scalar(
                    select(DagVersion.serialized).where(DagVersion.id == version_id)
                )
                cache[version_id] = None if serialized is None else SerializedDAG(serialized)
            return cache[version_id]

    def slots_of(version_id: int | None, task_id: str) -> int:
        dag = None if version_id is None else load_version(version_id)
        spec = dag.tasks.get(task_id) if dag else None
        return spec.pool_slots if spec else 1

    return slots_of
