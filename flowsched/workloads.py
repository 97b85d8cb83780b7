"""What crosses from the scheduler to a worker: a try's key and what it needs to run.

Executors, the Celery task and workers import this module, never the database
models: a payload that travels between processes must not drag the schema (or
SQLAlchemy) along, as Airflow 3's ``executors/workloads.py``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


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
        )

    def describe(self) -> str:
        index = f" map_index={self.map_index}" if self.map_index >= 0 else ""
        return f"{self.dag_id}.{self.task_id}{index} run={self.run_id} try={self.try_number}"
