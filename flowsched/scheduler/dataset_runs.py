"""Runs of DAGs scheduled on datasets, as Airflow's dataset-triggered runs.

A DAG with ``schedule=[Dataset(a), Dataset(b)]`` gets a run once both ``a``
and ``b`` have been updated since its last such run: each update queues the
DAG for that dataset (``dataset_dag_run_queue``), and when the queue holds
every dataset the DAG is scheduled on, the run is created and the DAG's queue
rows deleted in the same transaction. The run's data interval spans the
queued updates, from the first to now.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from flowsched.db.models import Dag, DagScheduleDatasetReference, DatasetDagRunQueue
from flowsched.scheduler.runs import create_run, make_run_id
from flowsched.schedules import Interval
from flowsched.state import RunType


def ready_dag_ids(session: Session, only: str | None = None) -> list[str]:
    """DAGs whose every scheduled-on dataset has been updated since their last such run."""
    queued = (
        select(
            DatasetDagRunQueue.target_dag_id.label("dag_id"),
            func.count().label("updated"),
        )
        .join(
            DagScheduleDatasetReference,
            (DagScheduleDatasetReference.dataset_id == DatasetDagRunQueue.dataset_id)
            & (DagScheduleDatasetReference.dag_id == DatasetDagRunQueue.target_dag_id),
        )
        .group_by(DatasetDagRunQueue.target_dag_id)
        .subquery()
    )
    required = (
        select(
            DagScheduleDatasetReference.dag_id.label("dag_id"),
            func.count().label("needed"),
        )
        .group_by(DagScheduleDatasetReference.dag_id)
        .subquery()
    )
    query = (
        select(queued.c.dag_id)
        .join(required, required.c.dag_id == queued.c.dag_id)
        .where(queued.c.updated == required.c.needed)
    )
    if only is not None:
        query = query.where(queued.c.dag_id == only)
    return list(session.scalars(query))


def create_dataset_triggered_runs(session: Session, now: datetime) -> list[str]:
    """Create the runs that are due; returns their run ids. Dag rows are locked
    ``SKIP LOCKED``, so two schedulers never create the same run."""
    dag_ids = ready_dag_ids(session)
    if not dag_ids:
        return []
    dags = session.scalars(
        select(Dag)
        .where(Dag.dag_id.in_(dag_ids), Dag.is_paused.is_(False), Dag.is_active.is_(True))
        .with_for_update(skip_locked=True)
    ).all()
    created: list[str] = []
    for dag in dags:
        if not ready_dag_ids(session, only=dag.dag_id):
            continue  # another scheduler created it between our read and our lock
        first = session.scalar(
            select(func.min(DatasetDagRunQueue.created_at)).where(
                DatasetDagRunQueue.target_dag_id == dag.dag_id
            )
        )
        run = create_run(
            session,
            dag.dag_id,
            run_type=RunType.DATASET_TRIGGERED,
            logical_date=now,
            interval=Interval(first or now, now),
            now=now,
            run_id=make_run_id(RunType.DATASET_TRIGGERED, now),
        )
        session.execute(
            delete(DatasetDagRunQueue).where(
                DatasetDagRunQueue.target_dag_id == dag.dag_id,
                DatasetDagRunQueue.created_at <= now,
            )
        )
        created.append(run.run_id)
    return created
