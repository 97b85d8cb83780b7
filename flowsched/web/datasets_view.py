"""The datasets page and ``/api/v1/datasets``: each dataset with its producers,
consumers and last update, read in four queries whatever the number of datasets."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from flowsched.db.models import (
    DagScheduleDatasetReference,
    DatasetEvent,
    DatasetModel,
    TaskOutletDatasetReference,
)


@dataclass
class DatasetSummary:
    uri: str
    extra: dict[str, Any]
    created_at: datetime
    producing_tasks: list[tuple[str, str]] = field(default_factory=list)
    consuming_dags: list[str] = field(default_factory=list)
    last_update: datetime | None = None
    last_source: tuple[str, str, str] | None = None  # dag_id, task_id, run_id
    event_count: int = 0


def dataset_summaries(session: Session) -> list[DatasetSummary]:
    datasets = session.scalars(select(DatasetModel).order_by(DatasetModel.uri)).all()
    by_id = {d.id: DatasetSummary(d.uri, d.extra or {}, d.created_at) for d in datasets}
    producers: dict[int, list[tuple[str, str]]] = defaultdict(list)
    for dataset_id, dag_id, task_id in session.execute(
        select(
            TaskOutletDatasetReference.dataset_id,
            TaskOutletDatasetReference.dag_id,
            TaskOutletDatasetReference.task_id,
        ).order_by(TaskOutletDatasetReference.dag_id, TaskOutletDatasetReference.task_id)
    ):
        producers[dataset_id].append((dag_id, task_id))
    for dataset_id, dag_id in session.execute(
        select(DagScheduleDatasetReference.dataset_id, DagScheduleDatasetReference.dag_id).order_by(
            DagScheduleDatasetReference.dag_id
        )
    ):
        if dataset_id in by_id:
            by_id[dataset_id].consuming_dags.append(dag_id)
    latest = (
        select(DatasetEvent.dataset_id, func.max(DatasetEvent.id).label("last_id"), func.count())
        .group_by(DatasetEvent.dataset_id)
        .subquery()
    )
    for event, count in session.execute(
        select(DatasetEvent, latest.c[2]).join(latest, latest.c.last_id == DatasetEvent.id)
    ):
        summary = by_id.get(event.dataset_id)
        if summary is not None:
            summary.last_update = event.timestamp
            summary.last_source = (event.source_dag_id, event.source_task_id, event.source_run_id)
            summary.event_count = count
    for dataset_id, tasks in producers.items():
        if dataset_id in by_id:
            by_id[dataset_id].producing_tasks = tasks
    return list(by_id.values())
