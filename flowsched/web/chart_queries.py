"""What the chart pages and their API read: a fixed number of indexed queries per chart.

Tries come from ``task_try`` (every try keeps its queued, start and end
times there, see :mod:`flowsched.lifecycle`), runs from ``dag_run``; a chart
over "the last N runs" reads at most N runs and their tries. Days of the
calendar are days in ``core.default_timezone``, worked out here rather than
in SQL so SQLite and MariaDB agree.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from flowsched.db.models import DagRun, Job, Pool, TaskInstance, TaskTry
from flowsched.operations import get_dag
from flowsched.state import TaskState
from flowsched.timezone import default_timezone, to_utc, utcnow
from flowsched.web import queries

DEFAULT_RUNS = 25
MAX_RUNS = 100
DEFAULT_DAYS = 182
MAX_DAYS = 366
MAX_CALENDAR_RUNS = 20_000  # the calendar reads at most this many runs
# Task states that hold or wait for a slot: what the cluster page counts.
WAITING_STATES = (
    TaskState.SCHEDULED.value,
    TaskState.QUEUED.value,
    TaskState.UP_FOR_RETRY.value,
    TaskState.UP_FOR_RESCHEDULE.value,
)
SLOT_STATES = (TaskState.QUEUED.value, TaskState.RUNNING.value)


def clamp(value: int | None, default: int, most: int) -> int:
    return min(most, max(1, value or default))


@dataclass(frozen=True)
class TryTimes:
    """One try of one task: when it was queued, started and ended."""

    task_id: str
    run_id: str
    try_number: int
    state: str
    queued_at: datetime | None
    start_date: datetime | None
    end_date: datetime | None
    duration: float | None
    hostname: str | None

    @property
    def seconds(self) -> float | None:
        """Run time: the stored duration, or up to now while it still runs."""
        if self.duration is not None:
            return self.duration
        if self.start_date is None:
            return None
        return ((self.end_date or utcnow()) - self.start_date).total_seconds()

    @property
    def queued_seconds(self) -> float | None:
        if self.queued_at is None or self.start_date is None:
            return None
        return max(0.0, (self.start_date - self.queued_at).total_seconds())


_TRY_COLUMNS = (
    TaskTry.task_id,
    TaskTry.run_id,
    TaskTry.try_number,
    TaskTry.state,
    TaskTry.queued_at,
    TaskTry.start_date,
    TaskTry.end_date,
    TaskTry.duration,
    TaskTry.hostname,
)


def _tries(session: Session, dag_id: str, run_ids: list[str]) -> list[TryTimes]:
    """Every try of the given runs (index ``idx_try_dag``), by task then try number."""
    if not run_ids:
        return []
    rows = session.execute(
        select(*_TRY_COLUMNS)
        .where(TaskTry.dag_id == dag_id, TaskTry.run_id.in_(run_ids))
        .order_by(TaskTry.task_id, TaskTry.try_number)
    ).all()
    return [TryTimes(*row) for row in rows]


def _task_order(detail: queries.DagDetail, seen: set[str]) -> list[str]:
    """The DAG's tasks in topological order, then tasks only older versions had."""
    order = detail.serialized.topological_order()
    return order + sorted(seen - set(order))


# -- Gantt ---------------------------------------------------------------------
@dataclass
class Gantt:
    run: DagRun
    task_ids: list[str]
    tries: list[TryTimes]

    @property
    def start(self) -> datetime | None:
        stamps = [t.queued_at or t.start_date for t in self.tries]
        present = [s for s in stamps if s is not None]
        return min(present) if present else None

    @property
    def end(self) -> datetime | None:
        stamps = [t.end_date or (utcnow() if t.start_date else t.queued_at) for t in self.tries]
        present = [s for s in stamps if s is not None]
        return max(present) if present else None


def gantt(session: Session, dag_id: str, run_id: str) -> Gantt:
    detail = queries.run_detail(session, dag_id, run_id)
    tries = _tries(session, dag_id, [run_id])
    seen = {t.task_id for t in tries} | {ti.task_id for ti in detail.task_instances}
    order = [ti.task_id for ti in detail.task_instances]  # already topological
    order += sorted(seen - set(order))
    return Gantt(detail.run, order, tries)


# -- the last N runs: task durations and landing times --------------------------
@dataclass
class RunPoint:
    run_id: str
    state: str
    logical_date: datetime
    landing_base: datetime  # data interval end (Airflow's landing time origin)


@dataclass
class Landing:
    """When a task of a run finished, counted from the end of the run's data interval."""

    task_id: str
    run_id: str
    state: str
    try_number: int
    end_date: datetime
    seconds: float


@dataclass
class History:
    runs: list[RunPoint]  # oldest first
    task_ids: list[str]
    tries: list[TryTimes]
    landings: list[Landing] = field(default_factory=list)

    def tries_of(self, task_id: str) -> list[TryTimes]:
        return [t for t in self.tries if t.task_id == task_id]

    def landings_of(self, task_id: str) -> list[Landing]:
        return [landing for landing in self.landings if landing.task_id == task_id]


def history(session: Session, detail: queries.DagDetail, num_runs: int) -> History:
    """The newest ``num_runs`` runs, their tries and each task's landing time: three queries."""
    dag_id = detail.dag.dag_id
    rows = session.execute(
        select(
            DagRun.run_id,
            DagRun.state,
            DagRun.logical_date,
            DagRun.data_interval_end,
            DagRun.id,
        )
        .where(DagRun.dag_id == dag_id)
        .order_by(DagRun.logical_date.desc())
        .limit(num_runs)
    ).all()
    rows = list(reversed(rows))
    runs = [
        RunPoint(r.run_id, r.state, r.logical_date, r.data_interval_end or r.logical_date)
        for r in rows
    ]
    tries = _tries(session, dag_id, [r.run_id for r in runs])
    base = {r.run_id: r.landing_base for r in runs}
    landings: list[Landing] = []
    if rows:
        finished = session.execute(
            select(
                TaskInstance.task_id,
                TaskInstance.run_id,
                TaskInstance.state,
                TaskInstance.try_number,
                TaskInstance.end_date,
            ).where(
                TaskInstance.dag_run_id.in_([r.id for r in rows]),
                TaskInstance.end_date.is_not(None),
            )
        ).all()
        for ti in finished:
            seconds = (ti.end_date - base[ti.run_id]).total_seconds()
            landings.append(
                Landing(ti.task_id, ti.run_id, ti.state, ti.try_number, ti.end_date, seconds)
            )
    seen = {t.task_id for t in tries} | {landing.task_id for landing in landings}
    return History(runs, _task_order(detail, seen), tries, landings)


# -- calendar --------------------------------------------------------------------
@dataclass
class Day:
    day: date
    counts: dict[str, int]

    @property
    def state(self) -> str:
        """The day's colour: failed beats running beats success (as Airflow's calendar)."""
        for state in ("failed", "running", "queued", "success"):
            if self.counts.get(state):
                return state
        return "none"

    @property
    def total(self) -> int:
        return sum(self.counts.values())


@dataclass
class Calendar:
    first: date
    last: date
    days: dict[date, Day]
    truncated: bool = False  # more runs than MAX_CALENDAR_RUNS: fewer days shown


def calendar(session: Session, dag_id: str, num_days: int) -> Calendar:
    """Run states per day (by logical date, in the cluster's zone) over ``num_days``."""
    get_dag(session, dag_id)
    zone = default_timezone()
    last = utcnow().astimezone(zone).date()
    first = last - timedelta(days=num_days - 1)
    since = to_utc(datetime.combine(first, datetime.min.time(), zone))
    rows = session.execute(
        select(DagRun.logical_date, DagRun.state)
        .where(DagRun.dag_id == dag_id, DagRun.logical_date >= since)
        .order_by(DagRun.logical_date.desc())
        .limit(MAX_CALENDAR_RUNS + 1)
    ).all()
    if len(rows) > MAX_CALENDAR_RUNS:
        # A DAG that runs every minute: show the days read in full, say so, read no more.
        oldest = to_utc(rows[-1][0]).astimezone(zone).date()
        first = oldest + timedelta(days=1)
    counters: dict[date, Counter[str]] = {}
    for logical_date, state in rows:
        day = to_utc(logical_date).astimezone(zone).date()
        if first <= day <= last:
            counters.setdefault(day, Counter())[state] += 1
    days = {day: Day(day, dict(counts)) for day, counts in counters.items()}
    return Calendar(first, last, days, truncated=len(rows) > MAX_CALENDAR_RUNS)


# -- cluster -----------------------------------------------------------------------
@dataclass
class PoolUsage:
    name: str
    slots: int
    running: int
    queued: int
    scheduled: int

    @property
    def open(self) -> int:
        return max(0, self.slots - self.running - self.queued)


@dataclass
class HostLoad:
    hostname: str
    nodename: str
    running: int


@dataclass
class Cluster:
    pools: list[PoolUsage]
    queues: dict[str, int]  # queue -> tries queued on it (sent to workers, not started)
    hosts: list[HostLoad]  # tries running per worker, from the database
    states: dict[str, int]  # tries waiting or running, by state
    jobs: list[Job]
    parallelism: int


def cluster(session: Session) -> Cluster:
    """Pools, queues and hosts as the database sees them now: four grouped queries."""
    from flowsched.config import get_config

    by_pool_state = session.execute(
        select(TaskInstance.pool, TaskInstance.state, func.count())
        .where(TaskInstance.state.in_([*WAITING_STATES, TaskState.RUNNING.value]))
        .group_by(TaskInstance.pool, TaskInstance.state)
    ).all()
    per_pool: dict[str, Counter[str]] = {}
    states: Counter[str] = Counter()
    for pool, state, count in by_pool_state:
        per_pool.setdefault(pool, Counter())[state] += count
        states[state] += count
    pools = [
        PoolUsage(
            pool.name,
            pool.slots,
            per_pool.get(pool.name, Counter())["running"],
            per_pool.get(pool.name, Counter())["queued"],
            per_pool.get(pool.name, Counter())["scheduled"],
        )
        for pool in session.scalars(select(Pool).order_by(Pool.name))
    ]
    queues = dict(
        session.execute(
            select(TaskInstance.queue, func.count())
            .where(TaskInstance.state == TaskState.QUEUED.value)
            .group_by(TaskInstance.queue)
            .order_by(TaskInstance.queue)
        ).all()
    )
    hosts = [
        HostLoad(hostname or "-", nodename or "-", count)
        for hostname, nodename, count in session.execute(
            select(TaskInstance.hostname, TaskInstance.worker_nodename, func.count())
            .where(TaskInstance.state == TaskState.RUNNING.value)
            .group_by(TaskInstance.hostname, TaskInstance.worker_nodename)
            .order_by(TaskInstance.hostname)
        ).all()
    ]
    depth: Counter[str] = Counter()
    for queue, count in queues.items():
        depth[queue or "default"] += count
    return Cluster(
        pools=pools,
        queues=dict(sorted(depth.items())),
        hosts=hosts,
        states=dict(states),
        jobs=queries.scheduler_jobs(session),
        parallelism=get_config().core.parallelism,
    )
