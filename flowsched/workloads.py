"""What crosses from the scheduler to a worker: a try's key and what it needs to run.

Executors, the Celery task and workers import this module, never the database
models: a payload that travels between processes must not drag the schema (or
SQLAlchemy) along, as Airflow 3's ``executors/workloads.py``.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import Any

# What a try sends back to the LocalExecutor once its result is committed (its ti id and
# try number, one write on a pipe: atomic), see flowsched.supervisor.announce_results_to.
RECORDED = struct.Struct("=qi")

# What a try's context needs of its run (``dag_run`` in templates, dates, conf).
RUN_FIELDS = (
    "id",
    "run_type",
    "state",
    "logical_date",
    "data_interval_start",
    "data_interval_end",
    "conf",
    "start_date",
    "dag_version_id",
)


def _run_fields(value: Any) -> dict[str, Any] | None:
    if value is None:
        return None
    if not isinstance(value, dict) or "logical_date" not in value:
        raise ValueError(f"workload run fields must be an object with logical_date: {value!r}")
    return {key: value.get(key) for key in RUN_FIELDS}


@dataclass(frozen=True)
class Workload:
    """What an executor carries to a worker: ids and a fingerprint, never code."""

    ti_id: int
    dag_id: str
    task_id: str
    run_id: str
    try_number: int
    fingerprint: str
    fileloc: str
    queue: str
    dag_version_id: int | None = None
    # Plugin files the task's operator comes from: {relative path: sha256}.
    plugins: dict[str, str] = field(default_factory=dict)
    # Which copy of a mapped task (Airflow's map_index); -1 for an unmapped task.
    map_index: int = -1
    # The run's fields the try's context needs (see RUN_FIELDS), as JSON values (dates
    # in ISO 8601), so the try reads none of them from the database; None: read them.
    run: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Workload:
        required = {"ti_id", "dag_id", "task_id", "run_id", "try_number", "fingerprint", "fileloc"}
        missing = required - set(data)
        if missing:
            raise ValueError(f"workload is missing {', '.join(sorted(missing))}")
        return cls(
            ti_id=int(data["ti_id"]),
            dag_id=str(data["dag_id"]),
            task_id=str(data["task_id"]),
            run_id=str(data["run_id"]),
            try_number=int(data["try_number"]),
            fingerprint=str(data["fingerprint"]),
            fileloc=str(data["fileloc"]),
            queue=str(data.get("queue") or "default"),
            dag_version_id=data.get("dag_version_id"),
            plugins={str(k): str(v) for k, v in (data.get("plugins") or {}).items()},
            map_index=int(data.get("map_index", -1)),
            run=_run_fields(data.get("run")),
        )

    def describe(self) -> str:
        index = f" map_index={self.map_index}" if self.map_index >= 0 else ""
        return f"{self.dag_id}.{self.task_id}{index} run={self.run_id} try={self.try_number}"
