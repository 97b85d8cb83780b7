"""The chart pages: a run's Gantt chart, task durations, landing times, calendar, cluster.

They join the read-only ``pages`` blueprint (login required, any role), read
through :mod:`flowsched.web.chart_queries` in one short transaction, place
shapes with :mod:`flowsched.web.charts` and render SVG on the server: no
JavaScript library, nothing fetched from elsewhere (the console works offline).
Route names and query arguments follow Airflow's views (``gantt``,
``duration``, ``landing_times``, ``calendar``, ``cluster_activity``; ``num_runs``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from flask import Response, render_template, request

from flowsched.db.engine import session_scope
from flowsched.state import RunState, TaskState
from flowsched.timezone import utcnow
from flowsched.web import chart_queries, charts, queries
from flowsched.web.views import UNFINISHED_RUN_STATES
from flowsched.web.views import bp as pages_bp
from flowsched.web.workers import active_count, workers_view


def num_runs() -> int:
    return chart_queries.clamp(
        request.args.get("num_runs", type=int), chart_queries.DEFAULT_RUNS, chart_queries.MAX_RUNS
    )


def num_days() -> int:
    return chart_queries.clamp(
        request.args.get("days", type=int), chart_queries.DEFAULT_DAYS, chart_queries.MAX_DAYS
    )


@pages_bp.route("/dags/<dag_id>/gantt")
def gantt(dag_id: str) -> Any:
    """The Gantt chart of ``?run_id=`` (default: the newest run)."""
    run_id = request.args.get("run_id")
    with session_scope(read_only=True) as session:
        detail = queries.dag_detail(session, dag_id)
        runs, _ = queries.list_runs(session, dag_id, size=queries.RECENT_RUNS)
        if not run_id and runs:
            run_id = runs[0].run_id
        chart = chart_queries.gantt(session, dag_id, run_id) if run_id else None
    drawing, shapes = charts.gantt_layout(chart) if chart else (None, [])
    live = chart is not None and chart.run.state in UNFINISHED_RUN_STATES
    return render_template(
        "chart_gantt.html",
        detail=detail,
        runs=runs,
        chart=chart,
        drawing=drawing,
        shapes=shapes,
        live=live,
        tab="gantt",
    )


@dataclass(frozen=True)
class RunsChart:
    """What differs between the charts over the last N runs (``chart_runs.html``)."""

    id: str
    title: str
    intro: str
    value: str
    empty: str
    layout: Callable[[chart_queries.History], Any]


DURATION = RunsChart(
    "durations",
    "task duration",
    "How long each try ran; a retried task shows one bar per try, coloured by the try's state",
    "Ran",
    "No try has run yet.",
    charts.durations_layout,
)
LANDING = RunsChart(
    "landing",
    "landing times",
    "When each task finished, counted from the end of its run's data interval "
    "(Airflow's landing time)",
    "Landed after",
    "No task has finished yet.",
    charts.landing_layout,
)


def _runs_chart(dag_id: str, text: RunsChart, tab: str) -> Any:
    count = num_runs()
    with session_scope(read_only=True) as session:
        detail = queries.dag_detail(session, dag_id)
        history = chart_queries.history(session, detail, count)
    drawing, bars, axis_top = text.layout(history)
    live = any(run.state in UNFINISHED_RUN_STATES for run in history.runs)
    return render_template(
        "chart_runs.html",
        detail=detail,
        history=history,
        drawing=drawing,
        bars=bars,
        axis_top=axis_top,
        num_runs=count,
        live=live,
        text=text,
        tab=tab,
    )


@pages_bp.route("/dags/<dag_id>/duration")
def duration(dag_id: str) -> Any:
    return _runs_chart(dag_id, DURATION, "duration")


@pages_bp.route("/dags/<dag_id>/landing_times")
def landing_times(dag_id: str) -> Any:
    return _runs_chart(dag_id, LANDING, "landing_times")


@pages_bp.route("/dags/<dag_id>/calendar")
def calendar(dag_id: str) -> Any:
    days = num_days()
    with session_scope(read_only=True) as session:
        detail = queries.dag_detail(session, dag_id)
        chart = chart_queries.calendar(session, dag_id, days)
    width, height, cells, months = charts.calendar_layout(chart)
    return render_template(
        "chart_calendar.html",
        detail=detail,
        chart=chart,
        width=width,
        height=height,
        cells=cells,
        months=months,
        days=days,
        tab="calendar",
    )


@pages_bp.route("/cluster_activity")
def cluster_activity() -> Any:
    """Workers, slots busy, queue depths and pools; the page refreshes itself."""
    with session_scope(read_only=True) as session:
        cluster = chart_queries.cluster(session)
    return render_template(
        "cluster.html",
        cluster=cluster,
        view=workers_view(),
        active_count=active_count,
        meter=charts.meter,
        cluster_now=utcnow(),
    )


@pages_bp.route("/charts/states.css")
def states_css() -> Any:
    """``.s-<state> { --state: var(--s-<state>) }`` for every state the code knows.

    Chart shapes fill with ``var(--state)``; generating the mapping from the
    state enums means a new state needs only its ``--s-<state>`` colour.
    """
    names = sorted({s.value for s in TaskState} | {s.value for s in RunState})
    body = "".join(f".s-{n} {{ --state: var(--s-{n}, var(--s-none)); }}\n" for n in names)
    response = Response(body, mimetype="text/css")
    response.headers["Cache-Control"] = "private, max-age=300"
    return response
