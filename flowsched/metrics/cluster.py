"""Cluster-wide figures the scheduler reads from the database every few seconds.

Nothing here runs per try: one pass (``[metrics] collect_interval``) reads the
unfinished task instances grouped by state, queue and pool (the ``state`` index),
the pools, and the try and run rows that can have changed since the previous
pass: those with a higher id than any seen, and those seen unfinished (by
primary key). A pass thus reads what is new or in flight, never the history,
and each try is counted once however long it runs.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

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


# How long an id skipped over (a row whose transaction commits after a higher id's,
# or one rolled back or deleted) is looked for again before it is given up.
GAP_PATIENCE = 120.0

_CHUNK = 500


class _Window:
    """Which rows of one table can still change: those above ``max_seen``, the ``open``
    ones (seen unfinished) and the ``gaps`` (ids skipped, until their deadline)."""

    def __init__(self) -> None:
        self.max_seen = 0
        self.open: set[int] = set()
        self.started: set[int] = set()  # open rows whose start was reported
        self.gaps: dict[int, float] = {}

    def rows(self, session: Session, columns: tuple[Any, ...], id_column: Any) -> list[Any]:
        found = list(session.execute(select(*columns).where(id_column > self.max_seen)))
        again = sorted(self.open | set(self.gaps))
        for start in range(0, len(again), _CHUNK):
            found += session.execute(
                select(*columns).where(id_column.in_(again[start : start + _CHUNK]))
            ).all()
        return found

    def advance(self, seen: list[tuple[int, bool]], now: float) -> None:
        """``seen``: (id, has ended) of this pass's rows."""
        ids = {row_id for row_id, _ in seen}
        top = max(ids, default=self.max_seen)
        for missing in set(range(self.max_seen + 1, top)) - ids:
            self.gaps[missing] = now + GAP_PATIENCE
        self.gaps = {
            gap: until for gap, until in self.gaps.items() if gap not in ids and until > now
        }
        self.open = (self.open - ids) | {row_id for row_id, ended in seen if not ended}
        self.started &= self.open
        self.max_seen = max(self.max_seen, top)


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
        """Where counting starts: after the newest try and run, with the tries of
        tasks now queued or running (through the state index, not a scan of the try
        history) and the unfinished runs as open."""
        self._tries.max_seen = session.scalar(select(func.max(TaskTry.id))) or 0
        self._tries.open = set(
            session.scalars(
                select(TaskTry.id)
                .join(
                    TaskInstance,
                    and_(
                        TaskInstance.id == TaskTry.task_instance_id,
                        # A try of a task still queued or running is the current one.
                        TaskInstance.try_number == TaskTry.try_number,
                    ),
                )
                .where(TaskInstance.state.in_([TaskState.QUEUED.value, TaskState.RUNNING.value]))
            )
        )
        self._runs.max_seen = session.scalar(select(func.max(DagRun.id))) or 0
        self._runs.open = set(
            session.scalars(select(DagRun.id).where(DagRun.state.in_(_UNFINISHED_RUNS)))
        )

    def _read_tries(self, session: Session, snapshot: Snapshot) -> None:
        window = self._tries
        columns = (
            TaskTry.id,
            TaskTry.dag_id,
            TaskTry.task_id,
            TaskTry.state,
            TaskTry.start_date,
            TaskTry.end_date,
            TaskTry.duration,
        )
        seen: list[tuple[int, bool]] = []
        for row_id, dag_id, task_id, state, start, end, duration in window.rows(
            session, columns, TaskTry.id
        ):
            if start is not None and row_id not in window.started:
                window.started.add(row_id)
                snapshot.tries_started.append((dag_id, task_id))
            if end is not None:
                snapshot.tries_ended.append(TryEnded(dag_id, task_id, state, duration))
            seen.append((row_id, end is not None))
        window.advance(seen, time.monotonic())

    def _read_runs(self, session: Session, snapshot: Snapshot) -> None:
        window = self._runs
        columns = (DagRun.id, DagRun.dag_id, DagRun.state, DagRun.start_date, DagRun.end_date)
        seen: list[tuple[int, bool]] = []
        for row_id, dag_id, state, start, end in window.rows(session, columns, DagRun.id):
            ended = state not in _UNFINISHED_RUNS
            if start is not None and row_id not in window.started:
                window.started.add(row_id)
                snapshot.runs_started.append(dag_id)
            if ended:
                snapshot.runs_ended.append(RunEnded(dag_id, state, _seconds(start, end)))
            seen.append((row_id, ended))
        window.advance(seen, time.monotonic())
