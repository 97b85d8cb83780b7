"""The OpenAPI part of the chart data endpoints (merged into :func:`openapi.spec`)."""

from __future__ import annotations

from typing import Any

from flowsched.web.openapi import (
    DAG_ID,
    RUN_ID,
    RUN_STATE,
    TASK_STATE,
    TIME,
    _json,
    _object,
    _op,
    _query,
    _ref,
)

SECONDS = {"type": ["number", "null"], "description": "seconds"}
STRINGS = {"type": "array", "items": {"type": "string"}}
NUM_RUNS = _query(
    "num_runs", {"type": "integer", "minimum": 1, "maximum": 100}, "How many of the newest runs."
)

SCHEMAS: dict[str, Any] = {
    "TryTimes": _object(
        {
            "task_id": {"type": "string"},
            "run_id": {"type": "string"},
            "try_number": {"type": "integer"},
            "state": TASK_STATE,
            "queued_at": TIME,
            "start_date": TIME,
            "end_date": TIME,
            "queued_duration": SECONDS,
            "duration": SECONDS,
            "hostname": {"type": ["string", "null"]},
        }
    ),
    "ChartRun": _object(
        {
            "run_id": {"type": "string"},
            "state": RUN_STATE,
            "logical_date": TIME,
            "data_interval_end": TIME,
        }
    ),
    "LandingTime": _object(
        {
            "task_id": {"type": "string"},
            "run_id": {"type": "string"},
            "state": TASK_STATE,
            "try_number": {"type": "integer"},
            "end_date": TIME,
            "landing_time": {
                "type": "number",
                "description": "seconds from the end of the run's data interval to the task's end",
            },
        }
    ),
    "PoolUsage": _object(
        {
            "name": {"type": "string"},
            "slots": {"type": "integer"},
            "running": {"type": "integer"},
            "queued": {"type": "integer"},
            "scheduled": {"type": "integer"},
            "open": {"type": "integer"},
        }
    ),
}


def _over_runs(summary: str, items: tuple[str, str], description: str) -> dict[str, Any]:
    """A chart over the newest ``num_runs`` runs: the runs, the tasks and ``items``."""
    key, schema = items
    body = {
        "dag_id": {"type": "string"},
        "runs": {"type": "array", "items": _ref("ChartRun")},
        "task_ids": STRINGS,
        key: {"type": "array", "items": _ref(schema)},
    }
    return {
        "parameters": [DAG_ID],
        "get": _op(summary, _json(_object(body), description), params=[NUM_RUNS]),
    }


def paths() -> dict[str, Any]:
    dag = "/dags/{dag_id}"
    return {
        dag + "/runs/{run_id}/gantt": {
            "parameters": [DAG_ID, RUN_ID],
            "get": _op(
                "Every try of a run with its queued, start and end times (the Gantt chart)",
                _json(
                    _object(
                        {
                            "dag_id": {"type": "string"},
                            "run_id": {"type": "string"},
                            "state": RUN_STATE,
                            "start": TIME,
                            "end": TIME,
                            "task_ids": STRINGS,
                            "tries": {"type": "array", "items": _ref("TryTimes")},
                        }
                    ),
                    "Tries by task and try number; start and end bound the chart",
                ),
            ),
        },
        dag + "/taskDurations": _over_runs(
            "Every try of the newest runs with its run time (the task duration chart)",
            ("tries", "TryTimes"),
            "Runs oldest first; a retried task has one entry per try",
        ),
        dag + "/landingTimes": _over_runs(
            "When each task of the newest runs finished, from its data interval's end",
            ("landing_times", "LandingTime"),
            "Runs oldest first; finished task instances only",
        ),
        dag + "/calendar": {
            "parameters": [DAG_ID],
            "get": _op(
                "Run states per day (by logical date, in core.default_timezone)",
                _json(
                    _object(
                        {
                            "dag_id": {"type": "string"},
                            "first_day": {"type": "string", "format": "date"},
                            "last_day": {"type": "string", "format": "date"},
                            "truncated": {
                                "type": "boolean",
                                "description": "more runs than the calendar reads: first_day moved",
                            },
                            "days": {
                                "type": "array",
                                "items": _object(
                                    {
                                        "date": {"type": "string", "format": "date"},
                                        "state": {
                                            "type": "string",
                                            "description": "failed, running, queued or success",
                                        },
                                        "counts": {
                                            "type": "object",
                                            "additionalProperties": {"type": "integer"},
                                        },
                                    }
                                ),
                            },
                        }
                    ),
                    "Days with runs, oldest first",
                ),
                params=[
                    _query("days", {"type": "integer", "minimum": 1, "maximum": 366}, "Days back.")
                ],
            ),
        },
        "/clusterActivity": {
            "get": _op(
                "Tries by state, pools, queue depths and busy worker slots, now",
                _json(
                    _object(
                        {
                            "executor": {"type": "string"},
                            "message": {"type": ["string", "null"]},
                            "states": {
                                "type": "object",
                                "additionalProperties": {"type": "integer"},
                            },
                            "pools": {"type": "array", "items": _ref("PoolUsage")},
                            "queues": {
                                "type": "array",
                                "items": _object(
                                    {"queue": {"type": "string"}, "queued": {"type": "integer"}}
                                ),
                            },
                            "workers": {
                                "type": "array",
                                "items": _object(
                                    {
                                        "name": {"type": "string"},
                                        "hostname": {"type": ["string", "null"]},
                                        "busy": {"type": "integer"},
                                        "slots": {"type": ["integer", "null"]},
                                    }
                                ),
                            },
                        }
                    ),
                    "The cluster now",
                ),
                errors=(401, 503),
            ),
        },
    }
