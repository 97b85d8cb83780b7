"""The read-only pages: DAGs, a DAG's grid, graph, code and runs, a run, a task try, workers.

Each view reads through :mod:`flowsched.web.queries` inside one short
transaction and renders after it ends, so no lock is held while HTML is built.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from flask import Blueprint, abort, redirect, render_template, request, url_for
from sqlalchemy import select

from flowsched.db.engine import session_scope
from flowsched.db.models import DagVersion, TaskInstance
from flowsched.exceptions import DagNotFound, FlowschedError
from flowsched.scheduler.ti_deps import failed_dependencies
from flowsched.serialization import SerializedDAG
from flowsched.state import ACTIVE_TASK_STATES, RunState, TaskState
from flowsched.task_logs.files import LogTail
from flowsched.timezone import parse_datetime
from flowsched.web import graph, logs, queries
from flowsched.web.auth import require
from flowsched.web.datasets_view import dataset_summaries
from flowsched.web.group_view import GroupView, grid_rows, summary_state
from flowsched.web.openapi import spec
from flowsched.web.users import Role
from flowsched.web.workers import active_count, workers_view

# States in which a task page shows what keeps the task from being queued.
UNQUEUED = (TaskState.NONE.value, TaskState.SCHEDULED.value)

bp = Blueprint("pages", __name__)

UNFINISHED_RUN_STATES = frozenset({RunState.QUEUED.value, RunState.RUNNING.value})


def page_args(default_size: int = 50) -> tuple[int, int]:
    return queries.clamp_page(
        request.args.get("page", type=int), request.args.get("size", type=int), default_size
    )


def _paused_filter() -> bool | None:
    return {"paused": True, "active": False}.get(request.args.get("status", ""))


@bp.route("/")
def index() -> Any:
    return redirect(url_for("pages.dags"))


@bp.route("/dags")
def dags() -> Any:
    number, size = page_args()
    search = request.args.get("q", "").strip()
    tag = request.args.get("tag", "").strip()
    with session_scope(read_only=True) as session:
        listing = queries.list_dags(
            session,
            search=search or None,
            tag=tag or None,
            paused=_paused_filter(),
            page=number,
            size=size,
        )
    return render_template(
        "dags.html",
        listing=listing,
        search=search,
        tag=tag,
        status=request.args.get("status", ""),
    )


def _grid_limit() -> int:
    return min(queries.MAX_PAGE_SIZE, max(1, request.args.get("runs", queries.RECENT_RUNS, int)))


@bp.route("/dags/<dag_id>")
def dag_grid(dag_id: str) -> Any:
    before_text = request.args.get("before")
    try:
        before = parse_datetime(before_text) if before_text else None
    except ValueError:
        before = None
    with session_scope(read_only=True) as session:
        detail = queries.dag_detail(session, dag_id)
        grid = queries.dag_grid(session, detail, limit=_grid_limit(), before=before)
    live = any(run.state in UNFINISHED_RUN_STATES for run in grid.runs)
    groups = GroupView.from_args(detail.serialized, request.args.getlist("expand"))
    table = grid.rows()
    rows = grid_rows(
        groups,
        [task_id for task_id, _ in table],
        [[(c.state, c.try_number, c.mapped) if c else None for c in cells] for _, cells in table],
    )
    return render_template(
        "dag_grid.html", detail=detail, grid=grid, rows=rows, groups=groups, tab="grid", live=live
    )


@bp.route("/dags/<dag_id>/graph")
def dag_graph(dag_id: str) -> Any:
    run_id = request.args.get("run_id")
    with session_scope(read_only=True) as session:
        detail = queries.dag_detail(session, dag_id)
        runs, _ = queries.list_runs(session, dag_id, size=queries.RECENT_RUNS)
        run = next((r for r in runs if r.run_id == run_id), runs[0] if runs else None)
        if run_id and (run is None or run.run_id != run_id):
            run = queries.run_detail(session, dag_id, run_id).run
        states: dict[str, str] = {}
        serialized = detail.serialized
        if run is not None:
            by_task: dict[str, list[str]] = defaultdict(list)
            for task_id, state in session.execute(
                select(TaskInstance.task_id, TaskInstance.state).where(
                    TaskInstance.dag_run_id == run.id
                )
            ):
                by_task[task_id].append(state)
            # A mapped task's copies drawn as one box in the state that matters most.
            states = {task_id: summary_state(found) for task_id, found in by_task.items()}
            if run.dag_version_id and run.dag_version_id != detail.version.id:
                version = session.get(DagVersion, run.dag_version_id)
                if version is not None:
                    serialized = SerializedDAG(version.serialized)
    groups = GroupView.from_args(serialized, request.args.getlist("expand"))
    drawing = graph.layout(serialized, states, groups)
    live = run is not None and run.state in UNFINISHED_RUN_STATES
    return render_template(
        "dag_graph.html",
        detail=detail,
        drawing=drawing,
        groups=groups,
        runs=runs,
        run=run,
        tab="graph",
        live=live,
    )


@bp.route("/dags/<dag_id>/code")
def dag_code(dag_id: str) -> Any:
    wanted = request.args.get("version", type=int)
    with session_scope(read_only=True) as session:
        detail = queries.dag_detail(session, dag_id)
        versions = queries.dag_versions(session, dag_id)
        shown = detail.version
        if wanted is not None and wanted != shown.version_number:
            shown = session.scalar(
                select(DagVersion).where(
                    DagVersion.dag_id == dag_id, DagVersion.version_number == wanted
                )
            )
            if shown is None:
                raise DagNotFound(f"DAG '{dag_id}' has no version {wanted}")
    return render_template(
        "dag_code.html", detail=detail, versions=versions, shown=shown, tab="code"
    )


@bp.route("/dags/<dag_id>/runs")
def dag_runs(dag_id: str) -> Any:
    number, size = page_args()
    state = request.args.get("state") or None
    with session_scope(read_only=True) as session:
        detail = queries.dag_detail(session, dag_id)
        runs, pager = queries.list_runs(session, dag_id, state=state, page=number, size=size)
    return render_template(
        "dag_runs.html", detail=detail, runs=runs, page=pager, state=state, tab="runs"
    )


@bp.route("/dags/<dag_id>/runs/<path:run_id>")
def run_page(dag_id: str, run_id: str) -> Any:
    with session_scope(read_only=True) as session:
        detail = queries.dag_detail(session, dag_id)
        run = queries.run_detail(session, dag_id, run_id)
    live = run.run.state in UNFINISHED_RUN_STATES
    failed = any(
        ti.state in (TaskState.FAILED.value, TaskState.UPSTREAM_FAILED.value)
        for ti in run.task_instances
    )
    return render_template(
        "run.html", detail=detail, run=run, live=live, has_failed=failed, tab="runs"
    )


@bp.route("/dags/<dag_id>/runs/<path:run_id>/tasks/<task_id>")
def task_page(dag_id: str, run_id: str, task_id: str) -> Any:
    with session_scope(read_only=True) as session:
        detail = queries.dag_detail(session, dag_id)
        map_index = request.args.get("map_index", type=int)
        task = queries.task_detail(session, dag_id, run_id, task_id, map_index)
        waiting = failed_dependencies(session, task.ti) if task.ti.state in UNQUEUED else []
        # A mapped task's copies, each linked: this page shows one of them.
        mapped = queries.mapped_copies(session, dag_id, run_id, task_id)
        mapped = mapped if task.ti.map_index >= 0 else []
    numbers = [t.try_number for t in task.tries]
    selected = request.args.get("try", type=int) or (numbers[-1] if numbers else None)
    chosen = next((t for t in task.tries if t.try_number == selected), None)
    log_tail: LogTail | None = None
    log_error: str | None = None
    if chosen is None:
        log_error = "This task has not run yet: no try, no log."
    else:
        try:
            log_tail = logs.log_tail(chosen, dag_id, run_id, task_id)
        except FlowschedError as exc:  # LogUnavailable, or e.g. no secret_key to sign with
            log_error = str(exc)
    live = task.ti.state in {s.value for s in ACTIVE_TASK_STATES}
    return render_template(
        "task.html",
        detail=detail,
        task=task,
        chosen=chosen,
        log_tail=log_tail,
        log_text=log_tail.text() if log_tail else None,
        log_error=log_error,
        live=live,
        waiting=waiting,
        mapped=mapped,
        tab="runs",
    )


@bp.route("/dags/<dag_id>/runs/<path:run_id>/tasks/<task_id>/log")
def task_log_download(dag_id: str, run_id: str, task_id: str) -> Any:
    """The whole log of one try (``?try=N``, default the latest), streamed as a download."""
    with session_scope(read_only=True) as session:
        map_index = request.args.get("map_index", type=int)
        task = queries.task_detail(session, dag_id, run_id, task_id, map_index)
    number = request.args.get("try", type=int) or task.ti.try_number
    attempt = logs.chosen_try(task.tries, dag_id, run_id, task_id, number)
    try:
        return logs.log_download(attempt, dag_id, run_id, task_id)
    except FlowschedError as exc:
        abort(404, description=str(exc))


@bp.route("/dags/<dag_id>/delete")
@require(Role.ADMIN)
def delete_confirm(dag_id: str) -> Any:
    with session_scope(read_only=True) as session:
        detail = queries.dag_detail(session, dag_id)
        _, pager = queries.list_runs(session, dag_id, size=1)
    return render_template("delete.html", detail=detail, run_count=pager.total, tab=None)


@bp.route("/workers")
def workers() -> Any:
    with session_scope(read_only=True) as session:
        jobs = queries.scheduler_jobs(session)
    return render_template(
        "workers.html", view=workers_view(), jobs=jobs, active_count=active_count
    )


@bp.route("/datasets")
def datasets() -> Any:
    with session_scope(read_only=True) as session:
        summaries = dataset_summaries(session)
    return render_template("datasets.html", datasets=summaries)


@bp.route("/api-docs")
def api_docs() -> Any:
    return render_template("api_docs.html", spec=spec())
