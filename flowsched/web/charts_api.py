"""The chart data as JSON under ``/api/v1``: what the chart pages draw, for other tools.

The routes join the API blueprint (token auth, JSON errors) when this module
is imported; shapes are in :mod:`flowsched.web.openapi_charts`. Any role may
read them, as any role may see the pages.
"""

from __future__ import annotations

from typing import Any

from flask import jsonify

from flowsched.db.engine import session_scope
from flowsched.web import chart_queries, queries
from flowsched.web.api import bp, iso
from flowsched.web.chart_pages import num_days, num_runs
from flowsched.web.workers import active_count, workers_view


def try_times_json(attempt: chart_queries.TryTimes) -> dict[str, Any]:
    return {
        "task_id": attempt.task_id,
        "run_id": attempt.run_id,
        "try_number": attempt.try_number,
        "state": attempt.state,
        "queued_at": iso(attempt.queued_at),
        "start_date": iso(attempt.start_date),
        "end_date": iso(attempt.end_date),
        "queued_duration": attempt.queued_seconds,
        "duration": attempt.seconds,
        "hostname": attempt.hostname,
    }


def _runs_json(history: chart_queries.History) -> list[dict[str, Any]]:
    return [
        {
            "run_id": run.run_id,
            "state": run.state,
            "logical_date": iso(run.logical_date),
            "data_interval_end": iso(run.landing_base),
        }
        for run in history.runs
    ]


@bp.route("/dags/<dag_id>/runs/<path:run_id>/gantt")
def gantt(dag_id: str, run_id: str) -> Any:
    with session_scope() as session:
        chart = chart_queries.gantt(session, dag_id, run_id)
    return jsonify(
        dag_id=dag_id,
        run_id=chart.run.run_id,
        state=chart.run.state,
        start=iso(chart.start),
        end=iso(chart.end),
        task_ids=chart.task_ids,
        tries=[try_times_json(t) for t in chart.tries],
    )


def _history(dag_id: str) -> chart_queries.History:
    with session_scope() as session:
        detail = queries.dag_detail(session, dag_id)
        return chart_queries.history(session, detail, num_runs())


@bp.route("/dags/<dag_id>/taskDurations")
def task_durations(dag_id: str) -> Any:
    history = _history(dag_id)
    return jsonify(
        dag_id=dag_id,
        runs=_runs_json(history),
        task_ids=history.task_ids,
        tries=[try_times_json(t) for t in history.tries],
    )


@bp.route("/dags/<dag_id>/landingTimes")
def landing_times(dag_id: str) -> Any:
    history = _history(dag_id)
    landings = [
        {
            "task_id": landing.task_id,
            "run_id": landing.run_id,
            "state": landing.state,
            "try_number": landing.try_number,
            "end_date": iso(landing.end_date),
            "landing_time": landing.seconds,
        }
        for landing in history.landings
    ]
    return jsonify(
        dag_id=dag_id, runs=_runs_json(history), task_ids=history.task_ids, landing_times=landings
    )


@bp.route("/dags/<dag_id>/calendar")
def calendar(dag_id: str) -> Any:
    with session_scope() as session:
        chart = chart_queries.calendar(session, dag_id, num_days())
    days = [
        {"date": day.day.isoformat(), "state": day.state, "counts": day.counts}
        for day in sorted(chart.days.values(), key=lambda d: d.day)
    ]
    return jsonify(
        dag_id=dag_id,
        first_day=chart.first.isoformat(),
        last_day=chart.last.isoformat(),
        truncated=chart.truncated,
        days=days,
    )


@bp.route("/clusterActivity")
def cluster_activity() -> Any:
    with session_scope() as session:
        cluster = chart_queries.cluster(session)
    view = workers_view()
    if view.workers:
        workers = [
            {
                "name": str(w.get("nodename", "")),
                "hostname": w.get("hostname"),
                "busy": active_count(w),
                "slots": w.get("concurrency"),
            }
            for w in view.workers
        ]
    else:
        workers = [
            {"name": h.nodename, "hostname": h.hostname, "busy": h.running, "slots": None}
            for h in cluster.hosts
        ]
    pools = [
        {
            "name": p.name,
            "slots": p.slots,
            "running": p.running,
            "queued": p.queued,
            "scheduled": p.scheduled,
            "open": p.open,
        }
        for p in cluster.pools
    ]
    return jsonify(
        executor=view.executor,
        message=view.message,
        states=cluster.states,
        pools=pools,
        queues=[{"queue": q, "queued": n} for q, n in cluster.queues.items()],
        workers=workers,
    )
