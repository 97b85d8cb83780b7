"""Where a DAG's next scheduled run falls, from its schedule and its last run."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from flowsched.db.models import DagRun
from flowsched.schedules import Interval
from flowsched.serialization import SerializedDAG
from flowsched.state import RunType


def last_scheduled_interval(session: Session, dag_id: str) -> Interval | None:
    row = session.execute(
        select(DagRun.data_interval_start, DagRun.data_interval_end)
        .where(DagRun.dag_id == dag_id, DagRun.run_type == RunType.SCHEDULED.value)
        .order_by(DagRun.logical_date.desc())
        .limit(1)
    ).first()
    if row is None or row[0] is None or row[1] is None:
        return None
    return Interval(row[0], row[1])


def next_interval(
    session: Session,
    dag: SerializedDAG,
    now: datetime,
    after: Interval | None = None,
    *,
    no_runs: bool = False,
) -> Interval | None:
    """The next interval to run after ``after`` (default: the DAG's last scheduled run;
    ``no_runs``: the caller knows it has none, no need to look)."""
    if dag.start_date is None:
        return None
    last = after
    if last is None and not no_runs:
        last = last_scheduled_interval(session, dag.dag_id)
    return dag.schedule.next_interval(last, dag.start_date, dag.end_date, dag.catchup, now)


def next_run_fields(
    session: Session,
    dag: SerializedDAG,
    now: datetime,
    after: Interval | None = None,
    *,
    no_runs: bool = False,
) -> tuple[datetime | None, datetime | None, datetime | None]:
    """(interval start, interval end, create after) for the ``dag`` row."""
    interval = next_interval(session, dag, now, after, no_runs=no_runs)
    if interval is None:
        return None, None, None
    return interval.start, interval.end, interval.end
