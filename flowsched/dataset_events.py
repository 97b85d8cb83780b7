"""Dataset rows in the metadata database: references, events, the run queue.

The DAG processor records which DAGs consume and which tasks produce each
dataset (:func:`sync_dag_references`). A try that succeeds records an event for
each dataset its task produces and queues every consuming DAG
(:func:`record_outlet_events`, called in the same transaction as the success),
as Airflow's ``TaskInstance._register_dataset_changes``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import delete, insert, select
from sqlalchemy.orm import Session

from flowsched.db.models import (
    DagScheduleDatasetReference,
    DatasetDagRunQueue,
    DatasetEvent,
    DatasetModel,
    TaskOutletDatasetReference,
)


def _insert_ignore(session: Session, model: type, rows: list[dict[str, Any]]) -> None:
    """Insert rows, leaving any that already exist (another process may race us)."""
    if not rows:
        return
    prefix = "OR IGNORE" if session.get_bind().dialect.name == "sqlite" else "IGNORE"
    session.execute(insert(model).prefix_with(prefix), rows)


def _dataset_ids(
    session: Session, datasets: dict[str, dict[str, Any]], now: datetime
) -> dict[str, int]:
    """{uri: id}, creating rows for URIs not seen before."""
    if not datasets:
        return {}
    rows = [
        {"uri": uri, "extra": extra, "created_at": now, "updated_at": now}
        for uri, extra in datasets.items()
    ]
    _insert_ignore(session, DatasetModel, rows)
    return dict(
        session.execute(
            select(DatasetModel.uri, DatasetModel.id).where(DatasetModel.uri.in_(list(datasets)))
        ).all()
    )


def sync_dag_references(session: Session, data: dict[str, Any], now: datetime) -> None:
    """Make the DAG's consumer and producer references match its serialized form."""
    dag_id = data["dag_id"]
    schedule = data.get("schedule") or {}
    consumed = schedule.get("uris", []) if schedule.get("type") == "dataset" else []
    produced = [
        (task["task_id"], outlet) for task in data["tasks"] for outlet in task.get("outlets", [])
    ]
    datasets: dict[str, dict[str, Any]] = {key: {} for key in consumed}
    datasets.update({outlet["uri"]: outlet.get("extra") or {} for _, outlet in produced})
    ids = _dataset_ids(session, datasets, now)
    session.execute(
        delete(DagScheduleDatasetReference).where(DagScheduleDatasetReference.dag_id == dag_id)
    )
    session.execute(
        delete(TaskOutletDatasetReference).where(TaskOutletDatasetReference.dag_id == dag_id)
    )
    _insert_ignore(
        session,
        DagScheduleDatasetReference,
        [{"dataset_id": ids[uri], "dag_id": dag_id, "created_at": now} for uri in consumed],
    )
    _insert_ignore(
        session,
        TaskOutletDatasetReference,
        [
            {"dataset_id": ids[o["uri"]], "dag_id": dag_id, "task_id": t, "created_at": now}
            for t, o in produced
        ],
    )


def remove_dag_references(session: Session, dag_id: str) -> None:
    """Forget a deleted DAG as a consumer and producer (datasets and events stay)."""
    for model, column in (
        (DagScheduleDatasetReference, DagScheduleDatasetReference.dag_id),
        (TaskOutletDatasetReference, TaskOutletDatasetReference.dag_id),
        (DatasetDagRunQueue, DatasetDagRunQueue.target_dag_id),
    ):
        session.execute(delete(model).where(column == dag_id))


def record_outlet_events(
    session: Session, dag_id: str, task_id: str, run_id: str, try_number: int, now: datetime
) -> int:
    """Record an event per dataset the task produces and queue their consumers."""
    dataset_ids = session.scalars(
        select(TaskOutletDatasetReference.dataset_id).where(
            TaskOutletDatasetReference.dag_id == dag_id,
            TaskOutletDatasetReference.task_id == task_id,
        )
    ).all()
    if not dataset_ids:
        return 0
    session.execute(
        insert(DatasetEvent),
        [
            {
                "dataset_id": dataset_id,
                "extra": {},
                "source_dag_id": dag_id,
                "source_task_id": task_id,
                "source_run_id": run_id,
                "source_try_number": try_number,
                "timestamp": now,
            }
            for dataset_id in dataset_ids
        ],
    )
    consumers = session.execute(
        select(DagScheduleDatasetReference.dataset_id, DagScheduleDatasetReference.dag_id).where(
            DagScheduleDatasetReference.dataset_id.in_(dataset_ids)
        )
    ).all()
    _insert_ignore(
        session,
        DatasetDagRunQueue,
        [
            {"dataset_id": dataset_id, "target_dag_id": consumer, "created_at": now}
            for dataset_id, consumer in consumers
        ],
    )
    return len(dataset_ids)
