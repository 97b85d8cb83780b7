"""Cluster-wide figures the scheduler reads from the database every few seconds.

Nothing here runs per try: one pass (``[metrics] collect_interval``) reads the
unfinished task instances grouped by state, queue and pool (the ``state`` index),
the pools, and the try and run rows that started or ended since the previous
pass. Those rows are found by id from a low-water mark: the oldest try (or run)
still unfinished at the last pass, so a pass reads only the window of rows that
can still change, and each try is counted once however long it runs.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import and_, func, select
from sqlalchemy.orm import Session

from flowsched.db.models import DagRun, Job, Pool, TaskInstance, TaskTry
from flowsched.state import RunState, TaskState
from flowsched.timezone import utcnow

# States of a task instance that is still on its way (finished ones are not counted:
# the table only grows, and their number says nothing about the cluster now).
WAITING_STATES = (
    TaskState.NONE.value,
    TaskState.SCHEDULED.value,
    TaskState.QUEUED.value,
    TaskState.RUNNING.value,
    TaskState.UP_FOR_RETRY.value,
)
_UNFINISHED_RUNS = (RunState.QUEUED.value, RunState.RUNNING.value)


@dataclass(frozen=True)
class TryEnded:
    dag_id: str
    task_id: str
    state: str
    duration: float | None


@dataclass(frozen=True)
class RunEnded:
    dag_id: str
    state: str
    duration: float | None


@dataclass
class Snapshot:
    """What one pass found: gauges as they are now, and what happened since the last pass."""

    tis_by_state: dict[str, int] = field(default_factory=dict)
    queued_by_queue: dict[str, int] = field(default_factory=dict)
    pools: dict[str, dict[str, int]] = field(default_factory=dict)
    tries_started: list[tuple[str, str]] = field(default_factory=list)
    tries_ended: list[TryEnded] = field(default_factory=list)
    runs_started: list[str] = field(default_factory=list)
    runs_ended: list[RunEnded] = field(default_factory=list)


def leading_scheduler(session: Session, alive_within: float) -> int | None:
    """The job id of the scheduler that publishes the cluster-wide figures: the oldest
    live one. With several schedulers each try is then counted once, by one of them,
    and dashboards may sum over schedulers."""
    from flowsched.scheduler.loop import SCHEDULER_JOB

    return session.scalar(
        select(func.min(Job.id)).where(
            Job.job_type == SCHEDULER_JOB,
            Job.state == "running",
            Job.latest_heartbeat > utcnow() - timedelta(seconds=alive_within),
        )
    )


def _seconds(start: datetime | None, end: datetime | None) -> float | None:
    return (end - start).total_seconds() if start and end else None


class _Window:
    """Rows of one table from a low-water mark: which started and ended were reported."""

    def __init__(self) -> None:
        self.low: int | None = None
        self.started: set[int] = set()
        self.ended: set[int] = set()

    def advance(self, rows: list[tuple[int, bool, bool]], next_id: int) -> None:
        """``rows``: (id, has started, has ended) of this pass; keep only what can change."""
        open_ids = [row_id for row_id, _, ended in rows if not ended]
        self.low = min(open_ids) if open_ids else next_id
        self.started = {row_id for row_id in self.started if row_id >= self.low}
        self.ended = {row_id for row_id in self.ended if row_id >= self.low}


class ClusterReader:
    """Reads :class:`Snapshot`s; what had already started or ended before the first
    pass is not reported (counters count from this process's start, as Prometheus expects)."""

    def __init__(self) -> None:
        self._tries = _Window()
        self._runs = _Window()
        self.primed = False

    def read(self, session: Session) -> Snapshot:
        snapshot = Snapshot()
        self._read_gauges(session, snapshot)
        if not self.primed:
            self._prime(session)
        self._read_tries(session, snapshot)
        self._read_runs(session, snapshot)
        if not self.primed:
            self.primed = True
            snapshot.tries_started, snapshot.tries_ended = [], []
            snapshot.runs_started, snapshot.runs_ended = [], []
        return snapshot

    @staticmethod
    def _read_gauges(session: Session, snapshot: Snapshot) -> None:
        tis: Counter[str] = Counter({state: 0 for state in WAITING_STATES})
        queued: Counter[str] = Counter()
        pool_use: dict[str, Counter[str]] = {}
        for state, queue, pool, count in session.execute(
            select(TaskInstance.state, TaskInstance.queue, TaskInstance.pool, func.count())
            .where(TaskInstance.state.in_(WAITING_STATES))
            .group_by(TaskInstance.state, TaskInstance.queue, TaskInstance.pool)
        ):
            tis[state] += count
            if state == TaskState.QUEUED.value:
                queued[queue or "default"] += count
            if state in (TaskState.QUEUED.value, TaskState.RUNNING.value):
                pool_use.setdefault(pool, Counter())[state] += count
        for name, slots in session.execute(select(Pool.name, Pool.slots)):
            use = pool_use.get(name, Counter())
            used = use[TaskState.QUEUED.value] + use[TaskState.RUNNING.value]
            snapshot.pools[name] = {
                "total": slots,
                "queued": use[TaskState.QUEUED.value],
                "running": use[TaskState.RUNNING.value],
                "open": max(slots - used, 0),
            }
        snapshot.tis_by_state = dict(tis)
        snapshot.queued_by_queue = dict(queued)

    def _prime(self, session: Session) -> None:
        """The first low-water marks: the oldest try of a task now queued or running
        (through the state index, not a scan of the try history), and the oldest
        unfinished run; else the next row to come."""
        oldest_try = session.scalar(
            select(func.min(TaskTry.id))
            .join(
                TaskInstance,
                and_(
                    TaskInstance.id == TaskTry.task_instance_id,
                    TaskInstance.try_number == TaskTry.try_number,
                ),
            )
            # A try of a task still queued or running is the current one.
            .where(TaskInstance.state.in_([TaskState.QUEUED.value, TaskState.RUNNING.value]))
        )
        next_try = (session.scalar(select(func.max(TaskTry.id))) or 0) + 1
        self._tries.low = min(oldest_try or next_try, next_try)
        oldest_run = session.scalar(
            select(func.min(DagRun.id)).where(DagRun.state.in_(_UNFINISHED_RUNS))
        )
        next_run = (session.scalar(select(func.max(DagRun.id))) or 0) + 1
        self._runs.low = min(oldest_run or next_run, next_run)

    def _read_tries(self, session: Session, snapshot: Snapshot) -> None:
        window = self._tries
        rows = session.execute(
            select(
                TaskTry.id,
                TaskTry.dag_id,
                TaskTry.task_id,
                TaskTry.state,
                TaskTry.start_date,
                TaskTry.end_date,
                TaskTry.duration,
            )
            .where(TaskTry.id >= window.low)
            .order_by(TaskTry.id)
        ).all()
        seen: list[tuple[int, bool, bool]] = []
        for row_id, dag_id, task_id, state, start, end, duration in rows:
            if start is not None and row_id not in window.started:
                window.started.add(row_id)
                snapshot.tries_started.append((dag_id, task_id))
            if end is not None and row_id not in window.ended:
                window.ended.add(row_id)
                snapshot.tries_ended.append(TryEnded(dag_id, task_id, state, duration))
            seen.append((row_id, start is not None, end is not None))
        window.advance(seen, (rows[-1][0] + 1) if rows else window.low or 1)

    def _read_runs(self, session: Session, snapshot: Snapshot) -> None:
        window = self._runs
        rows = session.execute(
            select(DagRun.id, DagRun.dag_id, DagRun.state, DagRun.start_date, DagRun.end_date)
            .where(DagRun.id >= window.low)
            .order_by(DagRun.id)
        ).all()
        seen: list[tuple[int, bool, bool]] = []
        for row_id, dag_id, state, start, end in rows:
            ended = state not in _UNFINISHED_RUNS
            if start is not None and row_id not in window.started:
                window.started.add(row_id)
                snapshot.runs_started.append(dag_id)
            if ended and row_id not in window.ended:
                window.ended.add(row_id)
                snapshot.runs_ended.append(RunEnded(dag_id, state, _seconds(start, end)))
            seen.append((row_id, start is not None, ended))
        window.advance(seen, (rows[-1][0] + 1) if rows else window.low or 1)
