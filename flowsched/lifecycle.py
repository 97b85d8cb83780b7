"""State transitions of a task try, each one a conditional UPDATE.

Every transition names the state and try number it expects, so two processes
that race (two schedulers, a duplicated Celery message, a zombie sweep and a
late finishing task) cannot both win: the loser's UPDATE matches no row.
This is what makes "never run twice at the same time" hold by construction.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, insert, select, update
from sqlalchemy.orm import Session

from flowsched.dataset_events import record_outlet_events
from flowsched.db.models import CallbackRequest, DagRun, TaskInstance, TaskReschedule, TaskTry
from flowsched.state import RunState, TaskState
from flowsched.timezone import utcnow
from flowsched.workloads import Workload


def queue_try(
    session: Session,
    ti: TaskInstance,
    *,
    fingerprint: str,
    dag_version_id: int | None,
    fileloc: str,
    queue: str,
    job_id: int | None,
    now: datetime,
    plugins: dict[str, str] | None = None,
) -> Workload | None:
    """scheduled/none -> queued with the next try number; None if someone else moved it.

    A sensor that is ``up_for_reschedule`` (and due) goes back to queued in the same
    try: a reschedule is a pause of the try, not a new one (its history row goes on).
    """
    rescheduled = ti.state == TaskState.UP_FOR_RESCHEDULE.value
    if rescheduled:
        try_number = ti.try_number
        waiting = (TaskInstance.state == TaskState.UP_FOR_RESCHEDULE.value) & (
            TaskInstance.next_retry_at <= now
        )
        fresh: dict[str, Any] = {}
    else:
        try_number = ti.try_number + 1
        waiting = TaskInstance.state.in_([TaskState.SCHEDULED.value, TaskState.NONE.value])
        fresh = {"start_date": None, "duration": None}
    result = session.execute(
        update(TaskInstance)
        .where(TaskInstance.id == ti.id, TaskInstance.try_number == ti.try_number, waiting)
        .values(
            state=TaskState.QUEUED.value,
            try_number=try_number,
            queued_at=now,
            queue=queue,
            fingerprint=fingerprint,
            dag_version_id=dag_version_id,
            queued_by_job_id=job_id,
            hostname=None,
            worker_nodename=None,
            pid=None,
            end_date=None,
            next_retry_at=None,
            last_heartbeat=None,
            **fresh,
        )
        .execution_options(synchronize_session=False)
    )
    if result.rowcount != 1:
        return None
    if rescheduled:
        session.execute(
            update(TaskTry)
            .where(TaskTry.task_instance_id == ti.id, TaskTry.try_number == try_number)
            .values(state=TaskState.QUEUED.value, queued_at=now, end_date=None)
        )
    else:
        session.add(
            TaskTry(
                task_instance_id=ti.id,
                dag_id=ti.dag_id,
                run_id=ti.run_id,
                task_id=ti.task_id,
                map_index=ti.map_index,
                try_number=try_number,
                state=TaskState.QUEUED.value,
                fingerprint=fingerprint,
                dag_version_id=dag_version_id,
                queued_at=now,
            )
        )
    return Workload(
        ti_id=ti.id,
        dag_id=ti.dag_id,
        task_id=ti.task_id,
        run_id=ti.run_id,
        try_number=try_number,
        fingerprint=fingerprint,
        fileloc=fileloc,
        queue=queue,
        dag_version_id=dag_version_id,
        plugins=dict(plugins or {}),
        map_index=ti.map_index,
    )


def reschedule_try(
    session: Session,
    ti_id: int,
    try_number: int,
    *,
    reschedule_date: datetime,
    rendered_fields: dict[str, Any] | None = None,
) -> TaskState | None:
    """running -> up_for_reschedule: a sensor in mode="reschedule" will poke again at
    ``reschedule_date``. The try's process ends and frees its worker and pool slot;
    no retry is spent and the try number stays. A ``task_reschedule`` row records the
    poke (its first row dates the try's first poke, where a sensor's timeout starts).

    ``next_retry_at`` holds the reschedule date: the time before which the scheduler
    must not queue this instance, as for a retry. None if the try was not running.
    """
    now = utcnow()
    ti = session.scalar(select(TaskInstance).where(TaskInstance.id == ti_id).with_for_update())
    if ti is None or ti.try_number != try_number or ti.state != TaskState.RUNNING.value:
        return None
    started = ti.start_date or now
    duration = (now - started).total_seconds()
    session.execute(
        update(TaskInstance)
        .where(
            TaskInstance.id == ti_id,
            TaskInstance.try_number == try_number,
            TaskInstance.state == TaskState.RUNNING.value,
        )
        .values(
            state=TaskState.UP_FOR_RESCHEDULE.value,
            next_retry_at=reschedule_date,
            # Ready again at its reschedule date: queued in turn with tasks that became
            # ready before it, not ahead of them by its first scheduling (no starvation).
            scheduled_at=reschedule_date,
            end_date=now,
            duration=duration,
            pid=None,
        )
        .execution_options(synchronize_session=False)
    )
    values: dict[str, Any] = {"state": TaskState.UP_FOR_RESCHEDULE.value, "end_date": now}
    if rendered_fields is not None:
        values["rendered_fields"] = rendered_fields
    session.execute(
        update(TaskTry)
        .where(TaskTry.task_instance_id == ti_id, TaskTry.try_number == try_number)
        .values(**values)
    )
    session.add(
        TaskReschedule(
            task_instance_id=ti_id,
            dag_id=ti.dag_id,
            run_id=ti.run_id,
            task_id=ti.task_id,
            try_number=try_number,
            start_date=started,
            end_date=now,
            duration=duration,
            reschedule_date=reschedule_date,
        )
    )
    return TaskState.UP_FOR_RESCHEDULE


def poke_history(session: Session, ti_id: int, try_number: int) -> tuple[datetime | None, int]:
    """(start of the try's first poke, pokes rescheduled so far) from ``task_reschedule``."""
    first, count = session.execute(
        select(func.min(TaskReschedule.start_date), func.count()).where(
            TaskReschedule.task_instance_id == ti_id, TaskReschedule.try_number == try_number
        )
    ).one()
    return first, int(count or 0)


def claim_try(
    session: Session, workload: Workload, *, hostname: str, nodename: str, pid: int
) -> bool:
    """queued -> running for exactly this try; False means do not run it."""
    now = utcnow()
    result = session.execute(
        update(TaskInstance)
        .where(
            TaskInstance.id == workload.ti_id,
            TaskInstance.try_number == workload.try_number,
            TaskInstance.state == TaskState.QUEUED.value,
        )
        .values(
            state=TaskState.RUNNING.value,
            start_date=now,
            last_heartbeat=now,
            hostname=hostname,
            worker_nodename=nodename,
            pid=pid,
        )
        .execution_options(synchronize_session=False)
    )
    if result.rowcount != 1:
        return False
    session.execute(
        update(TaskTry)
        .where(
            TaskTry.task_instance_id == workload.ti_id,
            TaskTry.try_number == workload.try_number,
        )
        .values(
            state=TaskState.RUNNING.value,
            start_date=now,
            hostname=hostname,
            worker_nodename=nodename,
            pid=pid,
        )
    )
    return True


def heartbeat_try(session: Session, ti_id: int, try_number: int) -> bool:
    """Refresh the heartbeat; False if the try is no longer running (cleared, marked...)."""
    result = session.execute(
        update(TaskInstance)
        .where(
            TaskInstance.id == ti_id,
            TaskInstance.try_number == try_number,
            TaskInstance.state == TaskState.RUNNING.value,
        )
        .values(last_heartbeat=utcnow())
        .execution_options(synchronize_session=False)
    )
    return result.rowcount == 1


def finish_try(
    session: Session,
    ti_id: int,
    try_number: int,
    *,
    success: bool,
    error: str | None = None,
    retry_delay: timedelta = timedelta(0),
    expected_states: tuple[TaskState, ...] = (TaskState.RUNNING,),
    interrupted: bool = False,
    rendered_fields: dict[str, Any] | None = None,
    request_callbacks: bool = False,
    force_fail: bool = False,
) -> TaskState | None:
    """Record the end of a try and apply the retry policy.

    A failed try becomes ``up_for_retry`` while tries remain, else ``failed``;
    ``force_fail`` (AirflowFailException, a sensor's timeout) fails it outright.
    An ``interrupted`` try (shutdown) is retried without using up a retry.
    With ``request_callbacks`` (a failure decided outside the try's process: a
    zombie, a killed process), the task's failure or retry callback is requested
    from the callback runner in this same transaction.
    Returns the new state, or None if the try was not in ``expected_states``.
    """
    now = utcnow()
    ti = session.scalar(select(TaskInstance).where(TaskInstance.id == ti_id).with_for_update())
    if ti is None or ti.try_number != try_number:
        return None
    if ti.state not in {state.value for state in expected_states}:
        return None
    values: dict[str, Any] = {"end_date": now, "pid": None}
    duration = (now - ti.start_date).total_seconds() if ti.start_date else None
    values["duration"] = duration
    if success:
        new_state = TaskState.SUCCESS
    elif interrupted:
        new_state = TaskState.UP_FOR_RETRY
        values["max_tries"] = ti.max_tries + 1
        values["next_retry_at"] = now
    elif try_number <= ti.max_tries and not force_fail:
        new_state = TaskState.UP_FOR_RETRY
        values["next_retry_at"] = now + retry_delay
    else:
        new_state = TaskState.FAILED
    values["state"] = new_state.value
    session.execute(
        update(TaskInstance)
        .where(TaskInstance.id == ti_id, TaskInstance.try_number == try_number)
        .values(**values)
        .execution_options(synchronize_session=False)
    )
    if success:
        # In the same transaction as the success: an update is never recorded twice or lost.
        record_outlet_events(session, ti.dag_id, ti.task_id, ti.run_id, try_number, now)
    ended = TaskState.SUCCESS if success else TaskState.FAILED
    _end_try_record(session, ti_id, try_number, ended, now, duration, error, rendered_fields)
    if request_callbacks and not success and not interrupted:
        kind = "task_failure" if new_state is TaskState.FAILED else "task_retry"
        _request_callback(session, kind, ti.dag_id, ti.run_id, ti.task_id, try_number, error)
    return new_state


def _request_callback(
    session: Session,
    callback_type: str,
    dag_id: str,
    run_id: str,
    task_id: str | None,
    try_number: int | None,
    reason: str | None,
) -> None:
    session.add(
        CallbackRequest(
            created_at=utcnow(),
            callback_type=callback_type,
            dag_id=dag_id,
            run_id=run_id,
            task_id=task_id,
            try_number=try_number,
            reason=reason,
        )
    )


def finish_run(
    session: Session, run: DagRun, state: RunState, *, reason: str, request_callback: bool
) -> None:
    """A run ends ``success`` or ``failed``; with ``request_callback`` (the DAG has a
    callback for it, or the cluster has a fallback) its ``dag_success`` or
    ``dag_failure`` callback is requested in the same transaction.

    ``reason`` is Airflow's: ``success``, ``task_failure`` or ``timed_out``.
    """
    run.state = state.value
    run.end_date = utcnow()
    if request_callback:
        kind = "dag_success" if state is RunState.SUCCESS else "dag_failure"
        _request_callback(session, kind, run.dag_id, run.run_id, None, None, reason)


def _end_try_record(
    session: Session,
    ti_id: int,
    try_number: int,
    state: TaskState,
    now: datetime,
    duration: float | None,
    error: str | None,
    rendered_fields: dict[str, Any] | None,
) -> None:
    """Close the try's history row with how it ended."""
    values: dict[str, Any] = {
        "state": state.value,
        "end_date": now,
        "duration": duration,
        "error": error,
    }
    if rendered_fields is not None:
        values["rendered_fields"] = rendered_fields
    session.execute(
        update(TaskTry)
        .where(TaskTry.task_instance_id == ti_id, TaskTry.try_number == try_number)
        .values(**values)
    )


def requeue_lost_try(
    session: Session,
    ti_id: int,
    try_number: int,
    *,
    reason: str,
    expected_states: tuple[TaskState, ...],
    max_lost: int,
    retry_delay: timedelta = timedelta(0),
) -> TaskState | None:
    """A try lost through no fault of the task: its worker died, or its message never
    reached one. The task did not fail, so the try is retried without spending one of
    its retries (``max_tries`` grows by one, ``lost_count`` counts it), at most
    ``max_lost`` times; past that a lost try is a plain failure (retry policy applies).

    The try's record keeps ``reason`` as its error. Returns the new state, or None
    if the try was not in ``expected_states`` (it moved on: someone else won).
    """
    ti = session.scalar(select(TaskInstance).where(TaskInstance.id == ti_id).with_for_update())
    if ti is None or ti.try_number != try_number:
        return None
    if ti.state not in {state.value for state in expected_states}:
        return None
    if ti.lost_count >= max_lost:
        return finish_try(
            session,
            ti_id,
            try_number,
            success=False,
            error=(
                f"{reason}; lost {ti.lost_count} times already ([scheduler] max_lost_tries = "
                f"{max_lost}): counted as a failure"
            ),
            retry_delay=retry_delay,
            expected_states=expected_states,
            request_callbacks=True,
        )
    now = utcnow()
    result = session.execute(
        update(TaskInstance)
        .where(
            TaskInstance.id == ti_id,
            TaskInstance.try_number == try_number,
            TaskInstance.state.in_([state.value for state in expected_states]),
            TaskInstance.lost_count == ti.lost_count,
        )
        .values(
            state=TaskState.UP_FOR_RETRY.value,
            max_tries=TaskInstance.max_tries + 1,
            lost_count=TaskInstance.lost_count + 1,
            next_retry_at=now,
            end_date=now,
            pid=None,
        )
        .execution_options(synchronize_session=False)
    )
    if result.rowcount != 1:
        return None
    session.execute(
        update(TaskTry)
        .where(TaskTry.task_instance_id == ti_id, TaskTry.try_number == try_number)
        .values(
            state=TaskState.FAILED.value,
            end_date=now,
            error=(
                f"{reason}: re-queued without spending a retry "
                f"(lost {ti.lost_count + 1} of {max_lost} allowed)"
            ),
        )
    )
    return TaskState.UP_FOR_RETRY


def skip_try(
    session: Session,
    ti_id: int,
    try_number: int,
    *,
    reason: str | None = None,
    rendered_fields: dict[str, Any] | None = None,
) -> TaskState | None:
    """running -> skipped: the task raised SkipTask. No retry is spent or scheduled.

    Returns the new state, or None if this try was no longer running.
    """
    now = utcnow()
    ti = session.scalar(select(TaskInstance).where(TaskInstance.id == ti_id).with_for_update())
    if ti is None or ti.try_number != try_number or ti.state != TaskState.RUNNING.value:
        return None
    duration = (now - ti.start_date).total_seconds() if ti.start_date else None
    session.execute(
        update(TaskInstance)
        .where(
            TaskInstance.id == ti_id,
            TaskInstance.try_number == try_number,
            TaskInstance.state == TaskState.RUNNING.value,
        )
        .values(state=TaskState.SKIPPED.value, end_date=now, duration=duration, pid=None)
        .execution_options(synchronize_session=False)
    )
    _end_try_record(
        session, ti_id, try_number, TaskState.SKIPPED, now, duration, reason, rendered_fields
    )
    return TaskState.SKIPPED


def skip_tasks(session: Session, dag_id: str, run_id: str, task_ids: Iterable[str]) -> int:
    """Mark tasks of a run skipped that have not started: a branch or short-circuit chose so.

    Only tasks still waiting (``none`` or ``scheduled``) are skipped; one already queued
    or running (say, with ``trigger_rule="always"``) is left to finish. Returns how many.
    """
    ids = sorted(set(task_ids))
    if not ids:
        return 0
    now = utcnow()
    result = session.execute(
        update(TaskInstance)
        .where(
            TaskInstance.dag_id == dag_id,
            TaskInstance.run_id == run_id,
            TaskInstance.task_id.in_(ids),
            TaskInstance.state.in_([TaskState.NONE.value, TaskState.SCHEDULED.value]),
        )
        .values(state=TaskState.SKIPPED.value, start_date=now, end_date=now)
        .execution_options(synchronize_session=False)
    )
    return result.rowcount


def time_out_run(session: Session, dag_run_id: int, reason: str) -> int:
    """Skip every unfinished task of a run past its ``dagrun_timeout``, as Airflow does.

    Running tries see their instance is no longer running at the next heartbeat and
    stop themselves; their history rows end here, with the reason. Returns how many.
    """
    now = utcnow()
    unfinished = [
        TaskState.NONE.value,
        TaskState.SCHEDULED.value,
        TaskState.QUEUED.value,
        TaskState.RUNNING.value,
        TaskState.UP_FOR_RETRY.value,
        TaskState.UP_FOR_RESCHEDULE.value,
    ]
    started = session.execute(
        select(TaskInstance.id, TaskInstance.try_number).where(
            TaskInstance.dag_run_id == dag_run_id,
            TaskInstance.state.in_(
                [
                    TaskState.QUEUED.value,
                    TaskState.RUNNING.value,
                    TaskState.UP_FOR_RESCHEDULE.value,
                ]
            ),
        )
    ).all()
    result = session.execute(
        update(TaskInstance)
        .where(TaskInstance.dag_run_id == dag_run_id, TaskInstance.state.in_(unfinished))
        .values(state=TaskState.SKIPPED.value, end_date=now)
        .execution_options(synchronize_session=False)
    )
    for ti_id, try_number in started:
        session.execute(
            update(TaskTry)
            .where(TaskTry.task_instance_id == ti_id, TaskTry.try_number == try_number)
            .values(state=TaskState.SKIPPED.value, end_date=now, error=reason)
        )
    return result.rowcount


def expand_mapped(session: Session, ti_id: int, count: int, now: datetime) -> int:
    """none -> scheduled as ``count`` copies of a mapped task, map_index 0..count-1.

    As in Airflow the unexpanded instance (map_index -1) becomes copy 0 and the
    others are added beside it, all scheduled at once: their upstreams are done.
    Returns how many copies now exist (0 if someone else expanded it first).
    """
    ti = session.scalar(select(TaskInstance).where(TaskInstance.id == ti_id).with_for_update())
    if ti is None or ti.map_index != -1 or ti.state != TaskState.NONE.value or count < 1:
        return 0
    ti.map_index = 0
    ti.state = TaskState.SCHEDULED.value
    ti.scheduled_at = now
    session.flush()
    copies = [
        {
            "dag_run_id": ti.dag_run_id,
            "dag_id": ti.dag_id,
            "run_id": ti.run_id,
            "task_id": ti.task_id,
            "map_index": index,
            "state": TaskState.SCHEDULED.value,
            "scheduled_at": now,
            "try_number": 0,
            "max_tries": ti.max_tries,
            "operator": ti.operator,
            "queue": ti.queue,
            "pool": ti.pool,
            "priority_weight": ti.priority_weight,
            "lost_count": 0,
        }
        for index in range(1, count)
    ]
    for start in range(0, len(copies), 500):
        session.execute(insert(TaskInstance), copies[start : start + 500])
    return count


def end_unexpanded(
    session: Session, ti_id: int, state: TaskState, reason: str, now: datetime
) -> TaskState | None:
    """none -> skipped (nothing to map over) or failed (unmappable) for a mapped task
    that cannot expand; the reason is kept as a try's error where the task page shows it.
    """
    result = session.execute(
        update(TaskInstance)
        .where(
            TaskInstance.id == ti_id,
            TaskInstance.map_index == -1,
            TaskInstance.state == TaskState.NONE.value,
        )
        .values(state=state.value, start_date=now, end_date=now, try_number=1)
        .execution_options(synchronize_session=False)
    )
    if result.rowcount != 1:
        return None
    ti = session.get(TaskInstance, ti_id)
    assert ti is not None
    session.add(
        TaskTry(
            task_instance_id=ti_id,
            dag_id=ti.dag_id,
            run_id=ti.run_id,
            task_id=ti.task_id,
            try_number=1,
            state=state.value,
            start_date=now,
            end_date=now,
            error=reason,
        )
    )
    return state
