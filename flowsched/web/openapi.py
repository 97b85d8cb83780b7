"""The OpenAPI 3.1 description of ``/api/v1``, served at ``/api/v1/openapi.json``.

It is the contract the tests hold the API to: every response the suite gets
is validated against it, so a field added to the code but not here (or the
reverse) fails the build.
"""

from __future__ import annotations

from functools import cache
from typing import Any

from flowsched import __version__
from flowsched.state import RunState, TaskState

TIME = {"type": ["string", "null"], "format": "date-time"}
TASK_STATE = {"type": "string", "enum": [state.value for state in TaskState]}
RUN_STATE = {"type": "string", "enum": [state.value for state in RunState]}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _object(properties: dict[str, Any], optional: tuple[str, ...] = ()) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": properties,
        "required": [key for key in properties if key not in optional],
        "additionalProperties": False,
    }


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


ERROR_TEXT = {
    400: "Malformed request or refused action",
    401: "Missing or invalid API token",
    403: "The token's user lacks the role",
    404: "Unknown DAG, run, task or try",
    503: "The metadata database is unreachable",
}


def _errors(*codes: int) -> dict[str, Any]:
    return {str(code): {"$ref": f"#/components/responses/E{code}"} for code in codes}


def _op(
    summary: str,
    ok: dict[str, Any],
    *,
    status: int = 200,
    role: str | None = None,
    body: dict[str, Any] | None = None,
    params: list[dict[str, Any]] | None = None,
    errors: tuple[int, ...] = (401, 404, 503),
) -> dict[str, Any]:
    operation: dict[str, Any] = {
        "summary": summary,
        "description": f"Needs the `{role}` role." if role else "Any role.",
        "responses": {str(status): ok, **_errors(*errors, *((403,) if role else ()))},
    }
    if body is not None:
        operation["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": body}},
        }
    if params:
        operation["parameters"] = params
    return operation


def _query(name: str, schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {
        "name": name,
        "in": "query",
        "required": False,
        "schema": schema,
        "description": description,
    }


def _path(name: str, schema: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "schema": schema or {"type": "string"}}


PAGING = [
    _query("page", {"type": "integer", "minimum": 1}, "Page number, from 1."),
    _query("size", {"type": "integer", "minimum": 1, "maximum": 100}, "Items per page."),
]

TI_PROPERTIES: dict[str, Any] = {
    "task_id": {"type": "string"},
    "map_index": {"type": "integer", "description": "-1 unless a copy of a mapped task"},
    "state": TASK_STATE,
    "try_number": {"type": "integer"},
    "max_tries": {"type": "integer"},
    "operator": {"type": ["string", "null"]},
    "queue": {"type": ["string", "null"]},
    "pool": {"type": "string"},
    "hostname": {"type": ["string", "null"]},
    "worker_nodename": {"type": ["string", "null"]},
    "start_date": TIME,
    "end_date": TIME,
    "duration": {"type": ["number", "null"]},
}

SCHEMAS: dict[str, Any] = {
    "Error": _object(
        {"status": {"type": "integer"}, "title": {"type": "string"}, "detail": {"type": "string"}}
    ),
    "Paging": _object(
        {"page": {"type": "integer"}, "size": {"type": "integer"}, "total": {"type": "integer"}}
    ),
    "RunSummary": _object(
        {
            "run_id": {"type": "string"},
            "state": RUN_STATE,
            "run_type": {"type": "string"},
            "logical_date": TIME,
            "start_date": TIME,
            "end_date": TIME,
        }
    ),
    "DagSummary": _object(
        {
            "dag_id": {"type": "string"},
            "description": {"type": ["string", "null"]},
            "fileloc": {"type": "string"},
            "is_paused": {"type": "boolean"},
            "is_active": {"type": "boolean"},
            "schedule": {"type": ["string", "null"]},
            "timezone": {"type": "string"},
            "tags": {"type": "array", "items": {"type": "string"}},
            "next_run": TIME,
            "next_logical_date": TIME,
            "last_run": {"oneOf": [_ref("RunSummary"), {"type": "null"}]},
            "recent_runs": {"type": "object", "additionalProperties": {"type": "integer"}},
        }
    ),
    "DagList": _object(
        {
            "dags": {"type": "array", "items": _ref("DagSummary")},
            "paging": _ref("Paging"),
            "import_errors": {"type": "integer"},
        }
    ),
    "Task": _object(
        {
            "task_id": {"type": "string"},
            "operator": {"type": "string"},
            "upstream": {"type": "array", "items": {"type": "string"}},
            "downstream": {"type": "array", "items": {"type": "string"}},
            "retries": {"type": "integer"},
            "trigger_rule": {"type": "string"},
            "queue": {"type": ["string", "null"]},
            "pool": {"type": "string"},
        }
    ),
    "Version": _object(
        {
            "version_number": {"type": "integer"},
            "fingerprint": {"type": "string"},
            "fileloc": {"type": "string"},
            "created_at": TIME,
            "source": {"type": "string"},
        },
        optional=("source",),
    ),
    "Dag": _object(
        {
            "dag_id": {"type": "string"},
            "description": {"type": ["string", "null"]},
            "fileloc": {"type": "string"},
            "is_paused": {"type": "boolean"},
            "is_active": {"type": "boolean"},
            "schedule": {"type": ["string", "null"]},
            "timezone": {"type": "string"},
            "tags": {"type": "array", "items": {"type": "string"}},
            "max_active_runs": {"type": "integer"},
            "next_run": TIME,
            "next_logical_date": TIME,
            "version": _ref("Version"),
            "tasks": {"type": "array", "items": _ref("Task")},
        }
    ),
    "Run": _object(
        {
            "dag_id": {"type": "string"},
            "run_id": {"type": "string"},
            "run_type": {"type": "string"},
            "state": RUN_STATE,
            "logical_date": TIME,
            "data_interval_start": TIME,
            "data_interval_end": TIME,
            "created_at": TIME,
            "start_date": TIME,
            "end_date": TIME,
            "conf": {"type": ["object", "null"]},
            "dag_version": {"type": ["integer", "null"]},
            "triggered_by": {
                "description": "The TriggerDagRunOperator task that created this run.",
                "oneOf": [
                    {"type": "null"},
                    _object(
                        {
                            "dag_id": {"type": "string"},
                            "run_id": {"type": "string"},
                            "task_id": {"type": ["string", "null"]},
                        }
                    ),
                ],
            },
        }
    ),
    "TaskInstance": _object(TI_PROPERTIES),
    "Dataset": _object(
        {
            "uri": {"type": "string"},
            "extra": {"type": "object"},
            "created_at": TIME,
            "producing_tasks": {
                "type": "array",
                "items": _object({"dag_id": {"type": "string"}, "task_id": {"type": "string"}}),
            },
            "consuming_dags": {
                "type": "array",
                "items": _object({"dag_id": {"type": "string"}}),
            },
            "last_update": TIME,
            "event_count": {"type": "integer"},
        }
    ),
    "TaskInstanceDetail": _object(
        {**TI_PROPERTIES, "tries": {"type": "array", "items": _ref("Try")}}
    ),
    "Try": _object(
        {
            "try_number": {"type": "integer"},
            "state": TASK_STATE,
            "hostname": {"type": ["string", "null"]},
            "worker_nodename": {"type": ["string", "null"]},
            "queued_at": TIME,
            "start_date": TIME,
            "end_date": TIME,
            "duration": {"type": ["number", "null"]},
            "error": {"type": ["string", "null"]},
        }
    ),
    "ImportError": _object(
        {"filename": {"type": "string"}, "traceback": {"type": "string"}, "created_at": TIME}
    ),
    "EventLog": _object(
        {
            "id": {"type": "integer"},
            "created_at": TIME,
            "event": {"type": "string"},
            "actor": {"type": ["string", "null"]},
            "user": {"type": ["string", "null"]},
            "dag_id": {"type": ["string", "null"]},
            "run_id": {"type": ["string", "null"]},
            "task_id": {"type": ["string", "null"]},
            "extra": {"type": ["object", "array", "null"]},
        }
    ),
    "Worker": {
        "type": "object",
        "properties": {
            "nodename": {"type": "string"},
            "hostname": {"type": ["string", "null"]},
            "version": {"type": ["string", "null"]},
            "active": {"type": "integer"},
        },
        "required": ["nodename", "active"],
    },
}

DAG_ID = _path("dag_id")
RUN_ID = _path("run_id")
TASK_ID = _path("task_id")


def _log_answer() -> dict[str, Any]:
    """The log's end as JSON (at most ``webserver.log_tail_bytes``), or all of it as text."""
    answer = _json(
        _object(
            {
                "try_number": {"type": "integer"},
                "hostname": {"type": ["string", "null"]},
                "content": {"type": "string"},
                "truncated": {"type": "boolean"},
                "size": {"type": "integer", "minimum": 0},
            }
        ),
        "The end of the log (at most webserver.log_tail_bytes, from the start of a line); "
        "truncated is true when there is more before it, size is the whole log in bytes",
    )
    answer["content"]["text/plain"] = {"schema": {"type": "string"}}
    return answer


def _paths() -> dict[str, Any]:
    dag = "/dags/{dag_id}"
    run = dag + "/runs/{run_id}"
    task = run + "/tasks/{task_id}"
    return {
        "/health": {
            "get": {
                "summary": "Health of the metadata database and the scheduler",
                "description": "No authentication; 503 when the metadata database is down.",
                "security": [],
                "responses": {
                    "200": {"$ref": "#/components/responses/Health"},
                    "503": {"$ref": "#/components/responses/Health"},
                },
            }
        },
        "/dags": {
            "get": _op(
                "List DAGs with their last run and recent run states",
                _json(_ref("DagList"), "A page of DAGs, by dag_id"),
                params=[
                    *PAGING,
                    _query("q", {"type": "string"}, "Substring of the dag_id."),
                    _query("tag", {"type": "string"}, "Only DAGs with this tag."),
                    _query("paused", {"type": "boolean"}, "Only paused (true) or active."),
                ],
                errors=(401, 503),
            )
        },
        dag: {
            "parameters": [DAG_ID],
            "get": _op("A DAG with its tasks and current version", _json(_ref("Dag"), "The DAG")),
            "patch": _op(
                "Pause or unpause a DAG",
                _json(_ref("Dag"), "The DAG after the change"),
                role="op",
                body=_object({"is_paused": {"type": "boolean"}}),
                errors=(400, 401, 404, 503),
            ),
            "delete": _op(
                "Delete a DAG and every row about it (as `flowsched dags delete`)",
                _json(
                    _object(
                        {
                            "dag_id": {"type": "string"},
                            "deleted": {
                                "type": "object",
                                "additionalProperties": {"type": "integer"},
                            },
                        }
                    ),
                    "Rows deleted per table",
                ),
                role="admin",
                params=[_query("force", {"type": "boolean"}, "Even with queued/running runs.")],
                errors=(400, 401, 404, 503),
            ),
        },
        dag + "/versions": {
            "parameters": [DAG_ID],
            "get": _op(
                "Every version of the DAG's file, newest first",
                _json(
                    _object({"versions": {"type": "array", "items": _ref("Version")}}),
                    "Versions without source",
                ),
            ),
        },
        dag + "/versions/{version_number}": {
            "parameters": [DAG_ID, _path("version_number", {"type": "integer"})],
            "get": _op("One version with its source", _json(_ref("Version"), "The version")),
        },
        dag + "/runs": {
            "parameters": [DAG_ID],
            "get": _op(
                "Runs of a DAG, newest first",
                _json(
                    _object(
                        {"runs": {"type": "array", "items": _ref("Run")}, "paging": _ref("Paging")}
                    ),
                    "A page of runs",
                ),
                params=[*PAGING, _query("state", RUN_STATE, "Only runs in this state.")],
            ),
            "post": _op(
                "Trigger a run now",
                _json(_ref("Run"), "The created run"),
                status=201,
                role="op",
                body=_object(
                    {
                        "conf": {"type": ["object", "null"]},
                        "run_id": {"type": ["string", "null"]},
                        "logical_date": TIME,
                    },
                    optional=("conf", "run_id", "logical_date"),
                ),
                errors=(400, 401, 404, 503),
            ),
        },
        dag + "/clear": {
            "parameters": [DAG_ID],
            "post": _op(
                "Clear task instances so they run again (as `flowsched tasks clear`)",
                _json(
                    _object(
                        {
                            "cleared": {
                                "type": "array",
                                "items": _object(
                                    {"run_id": {"type": "string"}, "task_id": {"type": "string"}}
                                ),
                            }
                        }
                    ),
                    "What was cleared",
                ),
                role="op",
                body=_object(
                    {
                        "dag_run_id": {"type": ["string", "null"]},
                        "run_id": {
                            "type": ["string", "null"],
                            "description": "Older name of dag_run_id.",
                        },
                        "task_ids": {
                            "type": ["array", "null"],
                            "description": "Task ids, or [task_id, map_index] pairs to "
                            "clear single copies of mapped tasks",
                            "items": {
                                "oneOf": [
                                    {"type": "string"},
                                    {
                                        "type": "array",
                                        "prefixItems": [{"type": "string"}, {"type": "integer"}],
                                        "minItems": 2,
                                        "maxItems": 2,
                                    },
                                ]
                            },
                        },
                        "only_failed": {"type": "boolean"},
                        "include_upstream": {"type": "boolean"},
                        "include_downstream": {"type": "boolean"},
                        "downstream": {
                            "type": "boolean",
                            "description": "Older name of include_downstream.",
                        },
                        "include_past": {
                            "type": "boolean",
                            "description": "Also the runs before dag_run_id (by logical date).",
                        },
                        "include_future": {
                            "type": "boolean",
                            "description": "Also the runs after dag_run_id (by logical date).",
                        },
                        "dry_run": {
                            "type": "boolean",
                            "description": "Only report what would be cleared. Default false "
                            "(Airflow's default is true).",
                        },
                        "reset_dag_runs": {
                            "type": "boolean",
                            "description": "Put the runs back to running (default true).",
                        },
                    },
                    optional=(
                        "dag_run_id",
                        "run_id",
                        "task_ids",
                        "only_failed",
                        "include_upstream",
                        "include_downstream",
                        "downstream",
                        "include_past",
                        "include_future",
                        "dry_run",
                        "reset_dag_runs",
                    ),
                ),
                errors=(400, 401, 404, 503),
            ),
        },
        dag + "/updateTaskInstancesState": {
            "parameters": [DAG_ID],
            "post": _op(
                "Mark a task, and as asked its relatives and past/future runs, success or failed",
                _json(
                    _object(
                        {
                            "task_instances": {
                                "type": "array",
                                "items": _object(
                                    {
                                        "dag_id": {"type": "string"},
                                        "dag_run_id": {"type": "string"},
                                        "task_id": {"type": "string"},
                                    }
                                ),
                            }
                        }
                    ),
                    "The task instances changed (or that would be, with dry_run)",
                ),
                role="admin",
                body=_object(
                    {
                        "dag_run_id": {"type": "string"},
                        "task_id": {"type": "string"},
                        "new_state": {"type": "string", "enum": ["success", "failed"]},
                        "include_upstream": {"type": "boolean"},
                        "include_downstream": {"type": "boolean"},
                        "include_past": {"type": "boolean"},
                        "include_future": {"type": "boolean"},
                        "dry_run": {"type": "boolean"},
                    },
                    optional=(
                        "include_upstream",
                        "include_downstream",
                        "include_past",
                        "include_future",
                        "dry_run",
                    ),
                ),
                errors=(400, 401, 404, 503),
            ),
        },
        run: {
            "parameters": [DAG_ID, RUN_ID],
            "get": _op("One run with its conf", _json(_ref("Run"), "The run")),
        },
        run + "/tasks": {
            "parameters": [DAG_ID, RUN_ID],
            "get": _op(
                "The task instances of a run",
                _json(
                    _object({"task_instances": {"type": "array", "items": _ref("TaskInstance")}}),
                    "Task instances in topological order",
                ),
            ),
        },
        task: {
            "parameters": [DAG_ID, RUN_ID, TASK_ID],
            "get": _op(
                "A task instance with every try",
                _json(_ref("TaskInstanceDetail"), "The task instance"),
            ),
            "patch": _op(
                "Mark a task instance success or failed",
                _json(_ref("TaskInstance"), "The task instance after the change"),
                role="admin",
                body=_object({"state": {"type": "string", "enum": ["success", "failed"]}}),
                errors=(400, 401, 404, 503),
            ),
        },
        task + "/{map_index}": {
            "parameters": [DAG_ID, RUN_ID, TASK_ID, _path("map_index", {"type": "integer"})],
            "get": _op(
                "One copy of a mapped task with every try",
                _json(_ref("TaskInstanceDetail"), "The task instance"),
            ),
        },
        task + "/listMapped": {
            "parameters": [DAG_ID, RUN_ID, TASK_ID],
            "get": _op(
                "Every copy of a mapped task, in map_index order",
                _json(
                    _object(
                        {
                            "task_instances": {"type": "array", "items": _ref("TaskInstance")},
                            "total_entries": {"type": "integer"},
                        }
                    ),
                    "The copies (one at map_index -1 for an unmapped task)",
                ),
            ),
        },
        task + "/dependencies": {
            "parameters": [DAG_ID, RUN_ID, TASK_ID],
            "get": _op(
                "Why the task instance is not queued yet (Airflow's failed dependencies)",
                _json(
                    _object(
                        {
                            "dependencies": {
                                "type": "array",
                                "items": _object(
                                    {"name": {"type": "string"}, "reason": {"type": "string"}}
                                ),
                            }
                        }
                    ),
                    "Each dependency not met, with Airflow's name and reason",
                ),
            ),
        },
        task + "/tries/{try_number}/log": {
            "parameters": [DAG_ID, RUN_ID, TASK_ID, _path("try_number", {"type": "integer"})],
            "get": _op(
                "The log of one try, fetched from the host that ran it",
                _log_answer(),
                params=[
                    _query(
                        "full_content",
                        {"type": "boolean"},
                        "true: the whole log as a streamed text/plain download.",
                    )
                ],
                errors=(400, 401, 404, 503),
            ),
        },
        "/datasets": {
            "get": _op(
                "Datasets with their producing tasks, consuming DAGs and last update",
                _json(
                    _object({"datasets": {"type": "array", "items": _ref("Dataset")}}),
                    "Every dataset, by URI",
                ),
                errors=(401, 503),
            )
        },
        "/import-errors": {
            "get": _op(
                "DAG files that failed to import",
                _json(
                    _object({"import_errors": {"type": "array", "items": _ref("ImportError")}}),
                    "Import errors with tracebacks",
                ),
                errors=(401, 503),
            )
        },
        "/eventLogs": {
            "get": _op(
                "The audit log, newest first: actions, logins and failed logins",
                _json(
                    _object(
                        {
                            "event_logs": {"type": "array", "items": _ref("EventLog")},
                            "paging": _ref("Paging"),
                        }
                    ),
                    "One page of audit events",
                ),
                role="admin",
                params=[
                    _query("user", {"type": "string"}, "Only events by this user."),
                    _query("dag_id", {"type": "string"}, "Only events about this DAG."),
                    _query(
                        "event",
                        {"type": "string"},
                        "Only this event: trigger, pause, clear, login_failed, ...",
                    ),
                    *PAGING,
                ],
                errors=(401, 503),
            )
        },
        "/workers": {
            "get": _op(
                "Live Celery workers (empty unless core.executor is celery)",
                _json(
                    _object(
                        {
                            "executor": {"type": "string"},
                            "workers": {"type": "array", "items": _ref("Worker")},
                            "message": {"type": ["string", "null"]},
                        }
                    ),
                    "Workers",
                ),
                errors=(401, 503),
            )
        },
    }


@cache
def spec() -> dict[str, Any]:
    from flowsched.web import openapi_charts, openapi_secrets  # they build on the helpers above

    error_responses = {f"E{code}": _json(_ref("Error"), text) for code, text in ERROR_TEXT.items()}
    health = _json(
        _object(
            {
                "metadatabase": {"type": "string", "enum": ["healthy", "unhealthy"]},
                "scheduler": {"type": "string", "enum": ["healthy", "unhealthy"]},
                "scheduler_heartbeat": TIME,
                "detail": {"type": ["string", "null"]},
            }
        ),
        "Component health",
    )
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "flowsched REST API",
            "version": __version__,
            "description": (
                "Reads and actions of the flowsched webserver. Authenticate with "
                "`Authorization: Bearer <token>` (create one with `flowsched users token USER`). "
                "Times are ISO 8601 in core.default_timezone, with their offset."
            ),
        },
        "servers": [{"url": "/api/v1"}],
        "security": [{"bearer": []}],
        "paths": {**_paths(), **openapi_secrets.paths(), **openapi_charts.paths()},
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": {**SCHEMAS, **openapi_secrets.SCHEMAS, **openapi_charts.SCHEMAS},
            "responses": {**error_responses, **openapi_secrets.RESPONSES, "Health": health},
        },
    }
