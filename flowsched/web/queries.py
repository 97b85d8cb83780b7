"""What the pages and the API read, in a fixed number of indexed queries per page.

Each function returns plain dataclasses, so the HTML views and the REST API
share one query per screen and neither issues a query per row (no N+1):
the DAGs page is four queries whatever the page size, a DAG's grid three.
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import String, func, select, type_coerce, union_all
from sqlalchemy.orm import Session, defer

from flowsched.db.models import Dag, DagRun, DagVersion, ImportError_, Job, TaskInstance, TaskTry
from flowsched.exceptions import DagNotFound, TaskNotFound
from flowsched.operations import get_dag, get_run
from flowsched.serialization import SerializedDAG
from flowsched.web.group_view import summary_state

RECENT_RUNS = 25
MAX_PAGE_SIZE = 100


@dataclass
class RunSummary:
    dag_id: str
    run_id: str
    state: str
    run_type: str
    logical_date: datetime
    start_date: datetime | None
    end_date: datetime | None

    @property
    def duration(self) -> float | None:
        if self.start_date is None or self.end_date is None:
            return None
        return (self.end_date - self.start_date).total_seconds()


@dataclass
class DagRow:
    dag: Dag
    last_run: RunSummary | None
    recent_counts: dict[str, int]

    @property
    def tags(self) -> list[str]:
        return list(self.dag.tags or [])


@dataclass
class Page:
    number: int
    size: int
    total: int

    @property
    def pages(self) -> int:
        return max(1, -(-self.total // self.size))

    @property
    def offset(self) -> int:
        return (self.number - 1) * self.size


@dataclass
class DagList:
    rows: list[DagRow]
    page: Page
    all_tags: list[str]
    import_errors: list[ImportError_]


def clamp_page(number: int | None, size: int | None, default_size: int = 50) -> tuple[int, int]:
    number = max(1, number or 1)
    size = min(MAX_PAGE_SIZE, max(1, size or default_size))
    return number, size


def _run_summary(row: Any) -> RunSummary:
    return RunSummary(
        dag_id=row.dag_id,
        run_id=row.run_id,
        state=row.state,
        run_type=row.run_type,
        logical_date=row.logical_date,
        start_date=row.start_date,
        end_date=row.end_date,
    )


_RUN_COLUMNS = (
    DagRun.id,
    DagRun.dag_id,
    DagRun.run_id,
    DagRun.state,
    DagRun.run_type,
    DagRun.logical_date,
    DagRun.start_date,
    DagRun.end_date,
)


def recent_runs(session: Session, dag_ids: list[str], limit: int = RECENT_RUNS) -> list[Any]:
    """The newest ``limit`` runs of each DAG: one UNION of index range scans.

    A window function would rank every run of every DAG on the page; a DAG
    with years of hourly runs would make that slow. Each arm here reads at
    most ``limit`` rows of ``idx_dag_run_dag_logical``.
    """
    if not dag_ids:
        return []
    arms = [
        select(*_RUN_COLUMNS)
        .where(DagRun.dag_id == dag_id)
        .order_by(DagRun.logical_date.desc())
        .limit(limit)
        .subquery()
        .select()
        for dag_id in dag_ids
    ]
    return list(session.execute(union_all(*arms) if len(arms) > 1 else arms[0]).all())


def list_dags(
    session: Session,
    *,
    search: str | None = None,
    tag: str | None = None,
    paused: bool | None = None,
    page: int = 1,
    size: int = 50,
) -> DagList:
    filters = []
    if search:
        filters.append(Dag.dag_id.contains(search, autoescape=True))
    if tag:
        # tags are a JSON list stored as text: match the quoted, JSON-escaped tag
        filters.append(type_coerce(Dag.tags, String).contains(json.dumps(tag), autoescape=True))
    if paused is not None:
        filters.append(Dag.is_paused.is_(paused))
    total = session.scalar(select(func.count()).select_from(Dag).where(*filters)) or 0
    pager = Page(page, size, total)
    dags = session.scalars(
        select(Dag).where(*filters).order_by(Dag.dag_id).limit(size).offset(pager.offset)
    ).all()
    runs_by_dag: dict[str, list[Any]] = {}
    for row in recent_runs(session, [d.dag_id for d in dags]):
        runs_by_dag.setdefault(row.dag_id, []).append(row)
    rows = []
    for dag in dags:
        runs = sorted(runs_by_dag.get(dag.dag_id, []), key=lambda r: r.logical_date, reverse=True)
        rows.append(
            DagRow(
                dag=dag,
                last_run=_run_summary(runs[0]) if runs else None,
                recent_counts=dict(Counter(r.state for r in runs)),
            )
        )
    all_tags = sorted({t for tags in session.scalars(select(Dag.tags)) for t in tags or []})
    return DagList(rows, pager, all_tags, import_errors(session))


def import_errors(session: Session) -> list[ImportError_]:
    return list(session.scalars(select(ImportError_).order_by(ImportError_.filename)))


@dataclass
class DagDetail:
    dag: Dag
    version: DagVersion
    serialized: SerializedDAG


def dag_detail(session: Session, dag_id: str) -> DagDetail:
    dag = get_dag(session, dag_id)
    version = session.get(DagVersion, dag.latest_version_id) if dag.latest_version_id else None
    if version is None:
        raise DagNotFound(f"DAG '{dag_id}' has not been parsed yet")
    return DagDetail(dag, version, SerializedDAG(version.serialized))


@dataclass
class Cell:
    state: str
    try_number: int
    # A mapped task's copies in this run (0: not mapped, or not expanded yet).
    mapped: int = 0


@dataclass
class Grid:
    runs: list[RunSummary]
    task_ids: list[str]
    cells: dict[tuple[str, str], Cell]
    has_older: bool

    def rows(self) -> list[tuple[str, list[Cell | None]]]:
        """Each task with its cells in run order, so the template does no lookups."""
        return [
            (task_id, [self.cells.get((run.run_id, task_id)) for run in self.runs])
            for task_id in self.task_ids
        ]


def dag_grid(
    session: Session, detail: DagDetail, *, limit: int = RECENT_RUNS, before: datetime | None = None
) -> Grid:
    """Runs (oldest left) by tasks (topological order): two indexed queries."""
    query = select(*_RUN_COLUMNS).where(DagRun.dag_id == detail.dag.dag_id)
    if before is not None:
        query = query.where(DagRun.logical_date < before)
    rows = session.execute(query.order_by(DagRun.logical_date.desc()).limit(limit + 1)).all()
    has_older = len(rows) > limit
    rows = list(reversed(rows[:limit]))
    by_pk = {row.id: row.run_id for row in rows}
    cells: dict[tuple[str, str], Cell] = {}
    seen_tasks: set[str] = set()
    if by_pk:
        ti_rows = session.execute(
            select(
                TaskInstance.dag_run_id,
                TaskInstance.task_id,
                TaskInstance.map_index,
                TaskInstance.state,
                TaskInstance.try_number,
            ).where(TaskInstance.dag_run_id.in_(list(by_pk)))
        ).all()
        copies: dict[tuple[str, str], list[Any]] = defaultdict(list)
        for ti in ti_rows:
            key = (by_pk[ti.dag_run_id], ti.task_id)
            if ti.map_index < 0:
                cells[key] = Cell(ti.state, ti.try_number)
            else:
                copies[key].append(ti)
            seen_tasks.add(ti.task_id)
        for key, tis in copies.items():
            # One square per mapped task and run, in the state that matters most
            # among its copies (as a group's square); the count in its tooltip.
            state = summary_state(ti.state for ti in tis)
            cells[key] = Cell(state, max(ti.try_number for ti in tis), len(tis))
    order = detail.serialized.topological_order()
    removed = sorted(seen_tasks - set(order))  # tasks of older versions, shown last
    return Grid([_run_summary(r) for r in rows], order + removed, cells, has_older)


def list_runs(
    session: Session, dag_id: str, *, state: str | None = None, page: int = 1, size: int = 50
) -> tuple[list[DagRun], Page]:
    get_dag(session, dag_id)
    filters = [DagRun.dag_id == dag_id]
    if state:
        filters.append(DagRun.state == state)
    total = session.scalar(select(func.count()).select_from(DagRun).where(*filters)) or 0
    pager = Page(page, size, total)
    runs = session.scalars(
        select(DagRun)
        .where(*filters)
        .order_by(DagRun.logical_date.desc())
        .limit(size)
        .offset(pager.offset)
    ).all()
    return list(runs), pager


@dataclass
class RunDetail:
    run: DagRun
    task_instances: list[TaskInstance]
    version: DagVersion | None
    serialized: SerializedDAG | None

    @property
    def counts(self) -> dict[str, int]:
        return dict(Counter(ti.state for ti in self.task_instances))


def run_detail(session: Session, dag_id: str, run_id: str) -> RunDetail:
    run = get_run(session, dag_id, run_id)
    tis = list(session.scalars(select(TaskInstance).where(TaskInstance.dag_run_id == run.id)).all())
    version = session.get(DagVersion, run.dag_version_id) if run.dag_version_id else None
    serialized = SerializedDAG(version.serialized) if version else None
    if serialized is not None:
        rank = {task_id: n for n, task_id in enumerate(serialized.topological_order())}
        tis.sort(key=lambda ti: (rank.get(ti.task_id, len(rank)), ti.task_id, ti.map_index))
    else:
        tis.sort(key=lambda ti: (ti.task_id, ti.map_index))
    return RunDetail(run, tis, version, serialized)


@dataclass
class TaskDetail:
    run: DagRun
    ti: TaskInstance
    tries: list[TaskTry] = field(default_factory=list)


def task_detail(
    session: Session, dag_id: str, run_id: str, task_id: str, map_index: int | None = None
) -> TaskDetail:
    """One task instance and its tries; without ``map_index``, an unmapped task's
    instance or a mapped task's first copy."""
    run = get_run(session, dag_id, run_id)
    query = select(TaskInstance).where(
        TaskInstance.dag_run_id == run.id, TaskInstance.task_id == task_id
    )
    if map_index is not None:
        query = query.where(TaskInstance.map_index == map_index)
    ti = session.scalar(query.order_by(TaskInstance.map_index).limit(1))
    if ti is None:
        where = f" with map_index {map_index}" if map_index is not None else ""
        raise TaskNotFound(f"run '{run_id}' of DAG '{dag_id}' has no task '{task_id}'{where}")
    tries = session.scalars(
        select(TaskTry).where(TaskTry.task_instance_id == ti.id).order_by(TaskTry.try_number)
    ).all()
    return TaskDetail(run, ti, list(tries))


def mapped_copies(session: Session, dag_id: str, run_id: str, task_id: str) -> list[TaskInstance]:
    """Every instance of a task in map_index order (one, at -1, for an unmapped task)."""
    run = get_run(session, dag_id, run_id)
    tis = list(
        session.scalars(
            select(TaskInstance)
            .where(TaskInstance.dag_run_id == run.id, TaskInstance.task_id == task_id)
            .order_by(TaskInstance.map_index)
        )
    )
    if not tis:
        raise TaskNotFound(f"run '{run_id}' of DAG '{dag_id}' has no task '{task_id}'")
    return tis


def dag_versions(session: Session, dag_id: str) -> list[DagVersion]:
    get_dag(session, dag_id)
    return list(
        session.scalars(
            select(DagVersion)
            .options(defer(DagVersion.source), defer(DagVersion.serialized))
            .where(DagVersion.dag_id == dag_id)
            .order_by(DagVersion.version_number.desc())
        )
    )


def scheduler_jobs(session: Session, limit: int = 10) -> list[Job]:
    """The latest scheduler and DAG-processor jobs, for the health view."""
    return list(session.scalars(select(Job).order_by(Job.latest_heartbeat.desc()).limit(limit)))
