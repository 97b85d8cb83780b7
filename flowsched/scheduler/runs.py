"""Creating DAG runs and their task instances; the one place runs are born.

The scheduler (scheduled runs), ``dags trigger`` (manual runs) and
``dags backfill`` all call :func:`create_run`, so every run gets the same rows.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from flowsched.db.models import Dag, DagRun, DagVersion, TaskInstance
from flowsched.exceptions import DagNotFound, FlowschedError
from flowsched.ids import validate_run_id
from flowsched.schedules import Interval
from flowsched.serialization import SerializedDAG
from flowsched.state import RunState, RunType, TaskState


def make_run_id(run_type: RunType, logical_date: datetime) -> str:
    return f"{run_type.value}__{logical_date.isoformat()}"


def latest_version(session: Session, dag_id: str) -> tuple[Dag, DagVersion]:
    dag = session.get(Dag, dag_id)
    if dag is None or dag.latest_version_id is None:
        raise DagNotFound(f"no DAG '{dag_id}' (is its file in the DAGs folder and parsed?)")
    version = session.get(DagVersion, dag.latest_version_id)
    assert version is not None
    return dag, version


def add_task_instances(
    session: Session, run: DagRun, dag: SerializedDAG, existing: set[str] | None = None
) -> int:
    """Create rows for tasks the run does not have yet (new tasks of a new version)."""
    existing = existing or set()
    added = 0
    for spec in dag.tasks.values():
        if spec.task_id in existing:
            continue
        session.add(
            TaskInstance(
                dag_run_id=run.id,
                dag_id=run.dag_id,
                run_id=run.run_id,
                task_id=spec.task_id,
                state=TaskState.NONE.value,
                try_number=0,
                max_tries=spec.retries,
                operator=spec.operator,
                queue=spec.queue,
                pool=spec.pool,
                priority_weight=dag.priority_weight_total[spec.task_id],
            )
        )
        added += 1
    return added


def create_run(
    session: Session,
    dag_id: str,
    *,
    run_type: RunType,
    logical_date: datetime,
    interval: Interval | None,
    now: datetime,
    conf: dict[str, Any] | None = None,
    run_id: str | None = None,
) -> DagRun:
    run_id = validate_run_id(run_id or make_run_id(run_type, logical_date))
    _, version = latest_version(session, dag_id)
    serialized = SerializedDAG(version.serialized)
    run = DagRun(
        dag_id=dag_id,
        run_id=run_id,
        run_type=run_type.value,
        state=RunState.QUEUED.value,
        logical_date=logical_date,
        data_interval_start=interval.start if interval else logical_date,
        data_interval_end=interval.end if interval else logical_date,
        conf=conf or {},
        dag_version_id=version.id,
        created_at=now,
    )
    session.add(run)
    try:
        with session.begin_nested():
            session.flush()
    except IntegrityError:
        raise FlowschedError(f"DAG '{dag_id}' already has a run with id '{run.run_id}'") from None
    add_task_instances(session, run, serialized)
    return run


def existing_run(session: Session, dag_id: str, run_id: str) -> DagRun | None:
    return session.scalar(select(DagRun).where(DagRun.dag_id == dag_id, DagRun.run_id == run_id))
