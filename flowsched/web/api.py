"""The REST API under ``/api/v1``: the pages' reads and actions as JSON, token auth.

Routes reuse :mod:`flowsched.web.queries` for reads and
:mod:`flowsched.operations` for actions, exactly like the pages and the CLI.
The shapes are described in :mod:`flowsched.web.openapi`; errors are
``{"status", "title", "detail"}`` (see :mod:`flowsched.web.errors`).
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any

from flask import Blueprint, abort, jsonify, request
from sqlalchemy import select, text

from flowsched import operations
from flowsched.db.engine import session_scope
from flowsched.db.models import DagRun, DagVersion, TaskInstance, TaskTry
from flowsched.exceptions import (
    DagNotFound,
    DatabaseUnavailable,
    FlowschedError,
)
from flowsched.scheduler.ti_deps import failed_dependencies
from flowsched.state import TaskState
from flowsched.timezone import default_timezone, parse_datetime, to_utc, utcnow
from flowsched.web import logs, queries
from flowsched.web.actions import parse_conf
from flowsched.web.auth import actor, load_token_user, require
from flowsched.web.datasets_view import dataset_summaries
from flowsched.web.openapi import spec
from flowsched.web.users import Role
from flowsched.web.views import page_args
from flowsched.web.workers import active_count, workers_view

bp = Blueprint("api", __name__, url_prefix="/api/v1")

PUBLIC_ENDPOINTS = frozenset({"api.openapi", "api.health"})
SCHEDULER_ALIVE_SECONDS = 60


@bp.before_request
def _authenticate() -> None:
    if request.endpoint not in PUBLIC_ENDPOINTS:
        load_token_user()


def iso(value: datetime | None) -> str | None:
    """ISO 8601 in the cluster's zone with its offset, like every time people see."""
    return to_utc(value).astimezone(default_timezone()).isoformat() if value else None


def _body() -> dict[str, Any]:
    data = request.get_json(silent=True)
    if data is None and request.get_data():
        abort(400, description="the request body is not valid JSON")
    if data is None:
        return {}
    if not isinstance(data, dict):
        abort(400, description="the request body must be a JSON object")
    return data


def _flag(data: dict[str, Any], key: str, default: bool = False) -> bool:
    value = data.get(key, default)
    if not isinstance(value, bool):
        abort(400, description=f"'{key}' must be true or false")
    return value


def _query_flag(name: str) -> bool | None:
    raw = request.args.get(name)
    if raw is None:
        return None
    if raw.lower() not in ("true", "false"):
        abort(400, description=f"query parameter '{name}' must be true or false")
    return raw.lower() == "true"


def _paging(pager: queries.Page) -> dict[str, int]:
    return {"page": pager.number, "size": pager.size, "total": pager.total}


# -- serializers -----------------------------------------------------------
def run_summary_json(run: queries.RunSummary | None) -> dict[str, Any] | None:
    if run is None:
        return None
    return {
        "run_id": run.run_id,
        "state": run.state,
        "run_type": run.run_type,
        "logical_date": iso(run.logical_date),
        "start_date": iso(run.start_date),
        "end_date": iso(run.end_date),
    }


def _dag_base(dag: Any) -> dict[str, Any]:
    return {
        "dag_id": dag.dag_id,
        "description": dag.description,
        "fileloc": dag.fileloc,
        "is_paused": dag.is_paused,
        "is_active": dag.is_active,
        "schedule": dag.schedule,
        "timezone": dag.timezone,
        "tags": list(dag.tags or []),
        "next_run": iso(dag.next_run_create_after),
        "next_logical_date": iso(dag.next_data_interval_start),
    }


def version_json(version: DagVersion, source: bool = False) -> dict[str, Any]:
    out = {
        "version_number": version.version_number,
        "fingerprint": version.fingerprint,
        "fileloc": version.fileloc,
        "created_at": iso(version.created_at),
    }
    if source:
        out["source"] = version.source
    return out


def dag_json(detail: queries.DagDetail) -> dict[str, Any]:
    dag = detail.serialized
    tasks = [
        {
            "task_id": task_id,
            "operator": dag.tasks[task_id].operator,
            "upstream": list(dag.tasks[task_id].upstream),
            "downstream": sorted(dag.downstream[task_id]),
            "retries": dag.tasks[task_id].retries,
            "trigger_rule": dag.tasks[task_id].trigger_rule.value,
            "queue": dag.tasks[task_id].queue,
            "pool": dag.tasks[task_id].pool,
        }
        for task_id in dag.topological_order()
    ]
    return {
        **_dag_base(detail.dag),
        "max_active_runs": detail.dag.max_active_runs,
        "version": version_json(detail.version),
        "tasks": tasks,
    }


def run_json(run: DagRun, version_number: int | None = None) -> dict[str, Any]:
    return {
        "dag_id": run.dag_id,
        "run_id": run.run_id,
        "run_type": run.run_type,
        "state": run.state,
        "logical_date": iso(run.logical_date),
        "data_interval_start": iso(run.data_interval_start),
        "data_interval_end": iso(run.data_interval_end),
        "created_at": iso(run.created_at),
        "start_date": iso(run.start_date),
        "end_date": iso(run.end_date),
        "conf": run.conf,
        "dag_version": version_number,
        "triggered_by": (
            {
                "dag_id": run.triggered_by_dag_id,
                "run_id": run.triggered_by_run_id,
                "task_id": run.triggered_by_task_id,
            }
            if run.triggered_by_dag_id
            else None
        ),
    }


def ti_json(ti: TaskInstance) -> dict[str, Any]:
    return {
        "task_id": ti.task_id,
        "map_index": ti.map_index,
        "state": ti.state,
        "try_number": ti.try_number,
        "max_tries": ti.max_tries,
        "operator": ti.operator,
        "queue": ti.queue,
        "pool": ti.pool,
        "hostname": ti.hostname,
        "worker_nodename": ti.worker_nodename,
        "start_date": iso(ti.start_date),
        "end_date": iso(ti.end_date),
        "duration": ti.duration,
    }


def try_json(attempt: TaskTry) -> dict[str, Any]:
    return {
        "try_number": attempt.try_number,
        "state": attempt.state,
        "hostname": attempt.hostname,
        "worker_nodename": attempt.worker_nodename,
        "queued_at": iso(attempt.queued_at),
        "start_date": iso(attempt.start_date),
        "end_date": iso(attempt.end_date),
        "duration": attempt.duration,
        "error": attempt.error,
    }


# -- public ----------------------------------------------------------------
@bp.route("/openapi.json")
def openapi() -> Any:
    return jsonify(spec())


@bp.route("/health")
def health() -> Any:
    """For load balancers and monitoring: 200 when the metadata DB answers."""
    try:
        with session_scope() as session:
            session.execute(text("SELECT 1"))
            jobs = queries.scheduler_jobs(session)
    except DatabaseUnavailable as exc:
        body = {
            "metadatabase": "unhealthy",
            "scheduler": "unhealthy",
            "scheduler_heartbeat": None,
            "detail": str(exc),
        }
        return jsonify(body), 503
    beats = [job.latest_heartbeat for job in jobs if job.job_type == "scheduler"]
    latest = max(beats) if beats else None
    alive = latest is not None and (utcnow() - latest).total_seconds() < SCHEDULER_ALIVE_SECONDS
    return jsonify(
        metadatabase="healthy",
        scheduler="healthy" if alive else "unhealthy",
        scheduler_heartbeat=iso(latest),
        detail=None if alive else "no scheduler heartbeat in the last minute",
    )


# -- DAGs ------------------------------------------------------------------
@bp.route("/dags")
def list_dags() -> Any:
    number, size = page_args()
    with session_scope() as session:
        listing = queries.list_dags(
            session,
            search=request.args.get("q") or None,
            tag=request.args.get("tag") or None,
            paused=_query_flag("paused"),
            page=number,
            size=size,
        )
    dags = [
        {
            **_dag_base(row.dag),
            "last_run": run_summary_json(row.last_run),
            "recent_runs": row.recent_counts,
        }
        for row in listing.rows
    ]
    return jsonify(
        dags=dags, paging=_paging(listing.page), import_errors=len(listing.import_errors)
    )


def _dag_response(dag_id: str) -> Any:
    with session_scope() as session:
        return jsonify(dag_json(queries.dag_detail(session, dag_id)))


@bp.route("/dags/<dag_id>")
def get_dag(dag_id: str) -> Any:
    return _dag_response(dag_id)


@bp.route("/dags/<dag_id>", methods=["PATCH"])
@require(Role.OP)
def patch_dag(dag_id: str) -> Any:
    data = _body()
    if set(data) != {"is_paused"}:
        abort(400, description='send exactly {"is_paused": true|false}')
    operations.set_paused(dag_id, _flag(data, "is_paused"), actor=actor())
    return _dag_response(dag_id)


@bp.route("/dags/<dag_id>", methods=["DELETE"])
@require(Role.ADMIN)
def delete_dag(dag_id: str) -> Any:
    result = operations.delete_dag(dag_id, force=bool(_query_flag("force")), actor=actor())
    return jsonify(dag_id=dag_id, deleted=result.counts)


@bp.route("/dags/<dag_id>/versions")
def list_versions(dag_id: str) -> Any:
    with session_scope() as session:
        versions = queries.dag_versions(session, dag_id)
    return jsonify(versions=[version_json(v) for v in versions])


@bp.route("/dags/<dag_id>/versions/<int:version_number>")
def get_version(dag_id: str, version_number: int) -> Any:
    with session_scope() as session:
        version = session.scalar(
            select(DagVersion).where(
                DagVersion.dag_id == dag_id, DagVersion.version_number == version_number
            )
        )
        if version is None:
            raise DagNotFound(f"DAG '{dag_id}' has no version {version_number}")
    return jsonify(version_json(version, source=True))


# -- runs ------------------------------------------------------------------
def _version_numbers(runs: list[DagRun]) -> dict[int, int]:
    ids = {run.dag_version_id for run in runs if run.dag_version_id}
    if not ids:
        return {}
    with session_scope() as session:
        rows = session.execute(
            select(DagVersion.id, DagVersion.version_number).where(DagVersion.id.in_(ids))
        ).all()
    return dict(rows)  # type: ignore[arg-type]


def _runs_json(runs: list[DagRun]) -> list[dict[str, Any]]:
    numbers = _version_numbers(runs)
    return [run_json(run, numbers.get(run.dag_version_id or 0)) for run in runs]


@bp.route("/dags/<dag_id>/runs")
def list_runs(dag_id: str) -> Any:
    number, size = page_args()
    with session_scope() as session:
        runs, pager = queries.list_runs(
            session, dag_id, state=request.args.get("state") or None, page=number, size=size
        )
    return jsonify(runs=_runs_json(runs), paging=_paging(pager))


@bp.route("/dags/<dag_id>/runs", methods=["POST"])
@require(Role.OP)
def trigger(dag_id: str) -> Any:
    data = _body()
    unknown = set(data) - {"conf", "run_id", "logical_date"}
    if unknown:
        abort(400, description=f"unknown field(s): {', '.join(sorted(unknown))}")
    conf = data.get("conf")
    if isinstance(conf, str):
        conf = parse_conf(conf)
    elif conf is not None and not isinstance(conf, dict):
        abort(400, description="'conf' must be a JSON object")
    logical_date = None
    if data.get("logical_date"):
        try:
            logical_date = parse_datetime(str(data["logical_date"]))
        except ValueError as exc:
            abort(400, description=f"logical_date: {exc}")
    run = operations.trigger_dag(
        dag_id,
        conf=conf,
        run_id=data.get("run_id") or None,
        logical_date=logical_date,
        actor=actor(),
    )
    return jsonify(_runs_json([run])[0]), 201


@bp.route("/dags/<dag_id>/runs/<path:run_id>/tasks")
def list_task_instances(dag_id: str, run_id: str) -> Any:
    with session_scope() as session:
        detail = queries.run_detail(session, dag_id, run_id)
    return jsonify(task_instances=[ti_json(ti) for ti in detail.task_instances])


@bp.route("/dags/<dag_id>/runs/<path:run_id>")
def get_run(dag_id: str, run_id: str) -> Any:
    with session_scope() as session:
        detail = queries.run_detail(session, dag_id, run_id)
    number = detail.version.version_number if detail.version else None
    return jsonify(run_json(detail.run, number))


# Airflow's names for the clear/mark flags, and the short names people try.
_AIRFLOW_NAMES = {
    "upstream": "include_upstream",
    "downstream": "include_downstream",
    "past": "include_past",
    "future": "include_future",
    "state": "new_state",
}


def _check_fields(data: dict[str, Any], known: set[str], unsupported: set[str]) -> None:
    """400 naming every field that is not known, or known from Airflow but not supported."""
    unknown = sorted(set(data) - known - unsupported)
    if unknown:
        hints = [
            f"{name} (did you mean {_AIRFLOW_NAMES[name]}?)"
            if _AIRFLOW_NAMES.get(name) in known
            else name
            for name in unknown
        ]
        abort(400, description=f"unknown field(s): {', '.join(hints)}")
    refused = sorted(set(data) & unsupported)
    if refused:
        abort(400, description=f"field(s) not supported by flowsched: {', '.join(refused)}")


_CLEAR_FIELDS = {
    "dag_run_id",
    "run_id",  # flowsched's older name of dag_run_id
    "task_ids",
    "only_failed",
    "downstream",  # flowsched's older name of include_downstream
    "include_upstream",
    "include_downstream",
    "include_past",
    "include_future",
    "dry_run",
    "reset_dag_runs",
}
# Airflow's clearTaskInstances fields flowsched does not have.
_CLEAR_UNSUPPORTED = {
    "start_date",
    "end_date",
    "only_running",
    "include_subdags",
    "include_parentdag",
}


def _clear_targets(task_ids: Any) -> tuple[list[str] | None, list[int] | None]:
    """Airflow's ``task_ids``: task ids, or ``[task_id, map_index]`` pairs for copies of
    mapped tasks (not both kinds in one request)."""
    if task_ids is None:
        return None, None
    if not isinstance(task_ids, list):
        abort(400, description="'task_ids' must be a list of task ids")
    if all(isinstance(t, str) for t in task_ids):
        return task_ids, None
    pairs = [
        t
        for t in task_ids
        if isinstance(t, list)
        and len(t) == 2
        and isinstance(t[0], str)
        and isinstance(t[1], int)
        and not isinstance(t[1], bool)
    ]
    if len(pairs) != len(task_ids):
        abort(
            400,
            description="'task_ids' must be a list of task ids or of [task_id, map_index] pairs",
        )
    return sorted({t for t, _ in pairs}), sorted({i for _, i in pairs})


@bp.route("/dags/<dag_id>/clear", methods=["POST"])
@require(Role.OP)
def clear(dag_id: str) -> Any:
    data = _body()
    _check_fields(data, _CLEAR_FIELDS, _CLEAR_UNSUPPORTED)
    task_ids, map_indexes = _clear_targets(data.get("task_ids"))
    if "run_id" in data and "dag_run_id" in data:
        abort(400, description="send 'dag_run_id' or its older name 'run_id', not both")
    regex = "^(?:" + "|".join(re.escape(t) for t in task_ids) + ")$" if task_ids else None
    result = operations.clear_tasks(
        dag_id,
        task_regex=regex,
        run_id=data.get("dag_run_id") or data.get("run_id") or None,
        only_failed=_flag(data, "only_failed"),
        upstream=_flag(data, "include_upstream"),
        downstream=_flag(data, "include_downstream") or _flag(data, "downstream"),
        past=_flag(data, "include_past"),
        future=_flag(data, "include_future"),
        dry_run=_flag(data, "dry_run"),
        reset_dag_runs=_flag(data, "reset_dag_runs", default=True),
        actor=actor(),
        map_indexes=map_indexes,
    )
    return jsonify(cleared=[{"run_id": r, "task_id": t} for r, t in result.cleared])


_MARK_FIELDS = {
    "dag_run_id",
    "task_id",
    "new_state",
    "include_upstream",
    "include_downstream",
    "include_past",
    "include_future",
    "dry_run",
}


@bp.route("/dags/<dag_id>/updateTaskInstancesState", methods=["POST"])
@require(Role.ADMIN)
def update_task_instances_state(dag_id: str) -> Any:
    """Airflow's "mark success/failed" with relatives and past/future runs."""
    data = _body()
    _check_fields(data, _MARK_FIELDS, {"execution_date"})
    missing = sorted({"dag_run_id", "task_id", "new_state"} - set(data))
    if missing:
        abort(400, description=f"missing field(s): {', '.join(missing)}")
    state = data["new_state"]
    if state not in (TaskState.SUCCESS.value, TaskState.FAILED.value):
        abort(400, description='\'new_state\' must be "success" or "failed"')
    for key in ("dag_run_id", "task_id"):
        if not isinstance(data[key], str):
            abort(400, description=f"'{key}' must be a string")
    with session_scope() as session:
        queries.task_detail(session, dag_id, data["dag_run_id"], data["task_id"])  # 404 first
    changed = operations.mark_tasks(
        dag_id,
        data["dag_run_id"],
        data["task_id"],
        TaskState(state),
        upstream=_flag(data, "include_upstream"),
        downstream=_flag(data, "include_downstream"),
        past=_flag(data, "include_past"),
        future=_flag(data, "include_future"),
        dry_run=_flag(data, "dry_run"),
        actor=actor(),
    )
    return jsonify(
        task_instances=[
            {"dag_id": dag_id, "dag_run_id": run_id, "task_id": task_id}
            for run_id, task_id in changed
        ]
    )


# -- task instances --------------------------------------------------------
@bp.route("/dags/<dag_id>/runs/<path:run_id>/tasks/<task_id>")
def get_task_instance(dag_id: str, run_id: str, task_id: str) -> Any:
    with session_scope() as session:
        detail = queries.task_detail(session, dag_id, run_id, task_id)
    return jsonify({**ti_json(detail.ti), "tries": [try_json(t) for t in detail.tries]})


@bp.route("/dags/<dag_id>/runs/<path:run_id>/tasks/<task_id>/<int:map_index>")
def get_mapped_task_instance(dag_id: str, run_id: str, task_id: str, map_index: int) -> Any:
    """One copy of a mapped task (Airflow's getMappedTaskInstance)."""
    with session_scope() as session:
        detail = queries.task_detail(session, dag_id, run_id, task_id, map_index)
    return jsonify({**ti_json(detail.ti), "tries": [try_json(t) for t in detail.tries]})


@bp.route("/dags/<dag_id>/runs/<path:run_id>/tasks/<task_id>/listMapped")
def list_mapped_task_instances(dag_id: str, run_id: str, task_id: str) -> Any:
    """Every copy of a mapped task in map_index order (Airflow's listMappedTaskInstances)."""
    with session_scope() as session:
        tis = queries.mapped_copies(session, dag_id, run_id, task_id)
    return jsonify(task_instances=[ti_json(ti) for ti in tis], total_entries=len(tis))


@bp.route("/dags/<dag_id>/runs/<path:run_id>/tasks/<task_id>/dependencies")
def task_instance_dependencies(dag_id: str, run_id: str, task_id: str) -> Any:
    """Why the instance is not queued yet (Airflow's failed dependencies); empty when queued."""
    with session_scope() as session:
        detail = queries.task_detail(session, dag_id, run_id, task_id)
        failed = failed_dependencies(session, detail.ti)
    return jsonify(dependencies=[{"name": dep.name, "reason": dep.reason} for dep in failed])


@bp.route("/dags/<dag_id>/runs/<path:run_id>/tasks/<task_id>", methods=["PATCH"])
@require(Role.ADMIN)
def mark_task_instance(dag_id: str, run_id: str, task_id: str) -> Any:
    data = _body()
    state = data.get("state")
    if set(data) != {"state"} or state not in (TaskState.SUCCESS.value, TaskState.FAILED.value):
        abort(400, description='send exactly {"state": "success"|"failed"}')
    with session_scope() as session:
        queries.task_detail(session, dag_id, run_id, task_id)  # 404 before acting
    operations.mark_task(dag_id, run_id, task_id, TaskState(state), actor=actor())
    with session_scope() as session:
        detail = queries.task_detail(session, dag_id, run_id, task_id)
    return jsonify(ti_json(detail.ti))


@bp.route("/dags/<dag_id>/runs/<path:run_id>/tasks/<task_id>/tries/<int:try_number>/log")
def task_log(dag_id: str, run_id: str, task_id: str, try_number: int) -> Any:
    """The log's tail (``webserver.log_tail_bytes``); ``?full_content=true``: all, streamed."""
    with session_scope() as session:
        detail = queries.task_detail(session, dag_id, run_id, task_id)
        attempt = logs.chosen_try(detail.tries, dag_id, run_id, task_id, try_number)
        session.expunge(attempt)
    try:
        if _query_flag("full_content"):
            return logs.log_download(attempt, dag_id, run_id, task_id)
        tail = logs.log_tail(attempt, dag_id, run_id, task_id)
    except FlowschedError as exc:  # LogUnavailable, or e.g. no secret_key to sign with
        abort(404, description=str(exc))
    return jsonify(
        try_number=try_number,
        hostname=attempt.hostname,
        content=tail.text(),
        truncated=tail.truncated,
        size=tail.size,
    )


# -- cluster ---------------------------------------------------------------
@bp.route("/import-errors")
def import_errors() -> Any:
    with session_scope() as session:
        found = queries.import_errors(session)
    errors = [
        {"filename": e.filename, "traceback": e.traceback, "created_at": iso(e.created_at)}
        for e in found
    ]
    return jsonify(import_errors=errors)


@bp.route("/workers")
def workers() -> Any:
    view = workers_view()
    rows = [
        {
            "nodename": str(w.get("nodename", "")),
            "hostname": w.get("hostname"),
            "version": w.get("version"),
            "active": active_count(w),
        }
        for w in view.workers
    ]
    return jsonify(executor=view.executor, workers=rows, message=view.message)


@bp.route("/datasets")
def datasets() -> Any:
    """Every dataset with its producing tasks, consuming DAGs and last update (Airflow's)."""
    with session_scope() as session:
        summaries = dataset_summaries(session)
    return jsonify(
        datasets=[
            {
                "uri": d.uri,
                "extra": d.extra,
                "created_at": iso(d.created_at),
                "producing_tasks": [{"dag_id": g, "task_id": t} for g, t in d.producing_tasks],
                "consuming_dags": [{"dag_id": dag_id} for dag_id in d.consuming_dags],
                "last_update": iso(d.last_update),
                "event_count": d.event_count,
            }
            for d in summaries
        ]
    )


# -- audit -----------------------------------------------------------------
@bp.route("/eventLogs")
@require(Role.ADMIN)
def event_logs() -> Any:
    """The audit log (Airflow's name), newest first; filters ``user``, ``dag_id``, ``event``."""
    from flowsched.web.audit_log import audit_json, audit_page
    from flowsched.web.security_pages import audit_filter

    number, size = page_args()
    with session_scope() as session:
        rows, pager = audit_page(session, audit_filter(), number, size)
    return jsonify(event_logs=[audit_json(row, iso) for row in rows], paging=_paging(pager))
