"""State transitions of a task try, each one a conditional UPDATE.

Every transition names the state and try number it expects, so two processes
that race (two schedulers, a duplicated Celery message, a zombie sweep and a
late finishing task) cannot both win: the loser's UPDATE matches no row.
This is what makes "never run twice at the same time" hold by construction.

This module is the only writer of a try's state (tests/test_one_writer.py holds
every other module to it): the scheduler's decisions and sweeps, a worker's claim
and result, clear and mark by hand and the foreground ``tasks run`` all come here.
The retry policy is looked up here as well, where it is applied, from the DAG
version the try was queued with: no caller has to fetch it, none can pass a wrong one.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Collection, Iterable, Mapping, Sequence
from contextvars import ContextVar
from datetime import datetime, timedelta
from typing import Any, NamedTuple

from sqlalchemy import (
    ColumnElement,
    Update,
    bindparam,
    func,
    insert,
    literal_column,
    select,
    update,
)
from sqlalchemy.orm import Session
from sqlalchemy.sql.elements import ClauseElement

from flowsched.dataset_events import record_outlet_events
from flowsched.db.engine import send_at_once
from flowsched.db.models import (
    CallbackRequest,
    DagRun,
    DagVersion,
    TaskInstance,
    TaskReschedule,
    TaskTry,
)
from flowsched.serialization import TaskSpec
from flowsched.state import RunState, TaskState
from flowsched.timezone import utcnow
from flowsched.workloads import RUN_FIELDS, Workload

# States in which a try's history row is open: the try was queued and has not ended.
OPEN_TRY_STATES = (TaskState.QUEUED, TaskState.RUNNING, TaskState.UP_FOR_RESCHEDULE)
# Bulk decisions are written this many instances per statement (bound parameter limits).
_CHUNK = 500


def _guarded_update(
    session: Session,
    ti_id: int,
    try_number: int,
    expected: Iterable[str],
    shared: Mapping[str, Any] | None = None,
    *,
    instance_only: Mapping[str, Any] | None = None,
    record_only: Mapping[str, Any] | None = None,
    match: Mapping[str, Any] | None = None,
    guard: Iterable[ColumnElement[bool]] = (),
    commit: bool = False,
) -> bool:
    """The one way a try changes: a conditional UPDATE of its instance naming the try
    number and the states it may be in (and ``match``: columns that must hold these
    values; ``guard``: any other condition); False (nothing written) if another writer
    got there first.

    Only when the instance row matched does the try's history row follow, with the
    ``shared`` values (what both rows record alike) and ``record_only`` ones; a try
    that lost the race never touches the history of the try that won.

    ``commit``: the caller's transaction ends with this transition. Where the
    connection can (a try's process on MariaDB/MySQL: ``engine.send_at_once``),
    both UPDATEs and the COMMIT then go to the server in one send: the history
    row's UPDATE is guarded by ``ROW_COUNT() > 0``, which the server evaluates
    once, before that UPDATE changes anything, as the row count of the instance's
    UPDATE just before it; so a try that lost the race still touches nothing, and
    the instance's row count still decides who won. Those two statements are
    templates built and compiled once per process (:func:`_at_once_templates`):
    a try's process builds no statement, it only sends values.
    """
    shared = dict(shared or {})
    record = {**shared, **(record_only or {})}
    values = {**shared, **(instance_only or {})}
    match = dict(match or {})
    states = tuple(str(state) for state in expected)
    guard = list(guard)
    if commit and record and not guard and not _has_expressions(values, record):
        instance, history = _at_once_templates(states, tuple(values), tuple(record), tuple(match))
        keys = {"ti_id": ti_id, "try_number": try_number}
        counts = send_at_once(
            session,
            [
                (
                    instance,
                    {
                        **keys,
                        **{f"state_{n}": state for n, state in enumerate(states)},
                        **{f"match_{name}": value for name, value in match.items()},
                        **{f"set_{name}": value for name, value in values.items()},
                    },
                ),
                (history, {**keys, **{f"rec_{name}": value for name, value in record.items()}}),
            ],
            prepare=_warming.get(),
        )
        if counts is not None:
            return counts[0] == 1
    instance = (
        update(TaskInstance)
        .where(
            TaskInstance.id == ti_id,
            TaskInstance.try_number == try_number,
            _one_of(TaskInstance.state, list(states)),
            *(getattr(TaskInstance, name) == value for name, value in match.items()),
            *guard,
        )
        .values(values)
        .execution_options(synchronize_session=False)
    )
    matched = session.execute(instance).rowcount == 1
    if not matched and not _warming.get():
        return False
    if record:
        session.execute(
            update(TaskTry)
            .where(TaskTry.task_instance_id == ti_id, TaskTry.try_number == try_number)
            .values(**record)
        )
    return matched


def _has_expressions(*mappings: Mapping[str, Any]) -> bool:
    """Whether a value is SQL (``max_tries + 1``) rather than data: not a template's."""
    return any(isinstance(value, ClauseElement) for each in mappings for value in each.values())


# The two UPDATEs of a transition sent at once, by its shape (expected states, the
# columns it sets and matches): a handful per process, built on first use.
_templates: dict[tuple[Any, ...], tuple[Update, Update]] = {}


def _at_once_templates(
    states: tuple[str, ...],
    value_names: tuple[str, ...],
    record_names: tuple[str, ...],
    match_names: tuple[str, ...],
) -> tuple[Update, Update]:
    """The instance's and the history row's UPDATE of a transition of this shape, every
    value a named bound parameter (``ti_id``, ``try_number``, ``state_<n>``,
    ``match_<column>``, ``set_<column>``, ``rec_<column>``)."""
    shape = (states, value_names, record_names, match_names)
    found = _templates.get(shape)
    if found is not None:
        return found
    ti, tt = TaskInstance.__table__.c, TaskTry.__table__.c

    def param(name: str, column: Any) -> Any:
        return bindparam(name, type_=column.type)

    in_states = [param(f"state_{n}", ti.state) for n in range(len(states))]
    instance = (
        update(TaskInstance.__table__)
        .where(
            ti.id == param("ti_id", ti.id),
            ti.try_number == param("try_number", ti.try_number),
            ti.state == in_states[0] if len(in_states) == 1 else ti.state.in_(in_states),
            *(ti[name] == param(f"match_{name}", ti[name]) for name in match_names),
        )
        .values({name: param(f"set_{name}", ti[name]) for name in value_names})
    )
    history = (
        update(TaskTry.__table__)
        .where(
            tt.task_instance_id == param("ti_id", tt.task_instance_id),
            tt.try_number == param("try_number", tt.try_number),
            func.row_count() > literal_column("0"),
        )
        .values({name: param(f"rec_{name}", tt[name]) for name in record_names})
    )
    found = _templates[shape] = (instance, history)
    return found


def _one_of(column: Any, values: list[str]) -> ColumnElement[bool]:
    """``column IN values``; ``column = value`` for one."""
    return column == values[0] if len(values) == 1 else column.in_(values)


# Set by warm_up: the history UPDATE is sent even when no instance matched (none can).
_warming: ContextVar[bool] = ContextVar("flowsched_lifecycle_warming", default=False)


def warm_up(session: Session) -> None:
    """Send, in a long-lived process that forks tries (a LocalExecutor or Celery pool
    process), the statements each try sends, for a try that cannot exist (id 0): they
    change nothing, but the engine's compiled forms (and its dialect's set-up) are
    then inherited by every forked try, which would otherwise compile them anew."""
    nobody = Workload(
        ti_id=0,
        dag_id="",
        task_id="",
        run_id="",
        try_number=0,
        fingerprint="",
        fileloc="",
        queue="",
    )
    token = _warming.set(True)
    try:
        # commit=True: also the forms a try sends at once with its COMMIT (compiled
        # here, never sent from here: this process's connections cannot).
        claim_try(session, nobody, hostname="", nodename="", pid=0, commit=True)
        for rendered in ({}, None):
            finish_try(
                session,
                0,
                0,
                success=True,
                rendered_fields=rendered,
                started=utcnow(),
                outlets=False,
                commit=True,
            )
    finally:
        _warming.reset(token)


def _locked_instance(session: Session, ti_id: int, try_number: int) -> TaskInstance | None:
    """The instance if it is still at ``try_number``, locked where the database can."""
    ti = session.scalar(select(TaskInstance).where(TaskInstance.id == ti_id).with_for_update())
    return ti if ti is not None and ti.try_number == try_number else None


def _history(rendered_fields: dict[str, Any] | None, **values: Any) -> dict[str, Any]:
    """What only a try's history row records: ``values``, and the fields the try
    rendered when it got as far as rendering them (never blanked by a try that did not)."""
    if rendered_fields is not None:
        values["rendered_fields"] = rendered_fields
    return values


def _duration(ti: TaskInstance, now: datetime) -> float | None:
    return (now - ti.start_date).total_seconds() if ti.start_date else None


def retry_delay(session: Session, ti: TaskInstance) -> timedelta:
    """The task's delay before its next try, by the DAG version its try was queued
    with (the policy the try ran under, not a newer file's)."""
    if ti.dag_version_id is None:
        return timedelta(0)
    version = session.get(DagVersion, ti.dag_version_id)
    if version is None:
        return timedelta(0)
    for task in version.serialized["tasks"]:
        if task["task_id"] == ti.task_id:
            return TaskSpec.from_dict(task).retry_delay_for(ti.try_number)
    return timedelta(0)


# --- queue and claim -----------------------------------------------------------------


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
    plugins: Mapping[str, str] | Iterable[tuple[str, str]] | None = None,
    by_hand: bool = False,
) -> Workload | None:
    """scheduled/none -> queued with the next try number; None if someone else moved it.

    A sensor that is ``up_for_reschedule`` (and due) goes back to queued in the same
    try: a reschedule is a pause of the try, not a new one (its history row goes on).
    ``by_hand`` (the foreground ``tasks run``) starts a new try from whatever state
    ``ti`` was read in, unless that try is queued or running: never twice at once.
    """
    rescheduled = ti.state == TaskState.UP_FOR_RESCHEDULE.value and not by_hand
    if by_hand:
        if ti.state in (TaskState.QUEUED.value, TaskState.RUNNING.value):
            return None
        expected: tuple[str, ...] = (ti.state,)
    elif rescheduled:
        expected = (TaskState.UP_FOR_RESCHEDULE.value,)
    else:
        expected = (TaskState.SCHEDULED.value, TaskState.NONE.value)
    try_number = ti.try_number if rescheduled else ti.try_number + 1
    fresh = {} if rescheduled else {"start_date": None, "duration": None}
    queued = _guarded_update(
        session,
        ti.id,
        ti.try_number,
        expected,
        # A new try's history row is added below; a resumed one's is reopened.
        {"state": TaskState.QUEUED.value, "queued_at": now, "end_date": None}
        if rescheduled
        else None,
        instance_only={
            "state": TaskState.QUEUED.value,
            "try_number": try_number,
            "queued_at": now,
            "queue": queue,
            "fingerprint": fingerprint,
            "dag_version_id": dag_version_id,
            "queued_by_job_id": job_id,
            "hostname": None,
            "worker_nodename": None,
            "pid": None,
            "end_date": None,
            "next_retry_at": None,
            "last_heartbeat": None,
            **fresh,
        },
        guard=[TaskInstance.next_retry_at <= now] if rescheduled else [],
    )
    if not queued:
        return None
    if not rescheduled:
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
    target = QueueTarget(
        fingerprint, dag_version_id, fileloc, queue, tuple(dict(plugins or {}).items())
    )
    return _workload(session, ti, try_number, target)


class QueueTarget(NamedTuple):
    """What a try is queued with: the DAG version and file it must run, and where."""

    fingerprint: str
    dag_version_id: int | None
    fileloc: str
    queue: str
    plugins: tuple[tuple[str, str], ...]  # (plugin file, fingerprint): hashable


def queue_tries(
    session: Session,
    tries: Sequence[tuple[Any, QueueTarget]],
    *,
    job_id: int | None,
    now: datetime,
) -> list[Workload]:
    """scheduled/none -> queued with the next try number, for many instances at once:
    the scheduler's pass. ``tries`` are (instance as read: id, dag_id, run_id, task_id,
    map_index, state, try_number; what to queue it with), in the order to queue them.

    The same transition as :func:`queue_try`, guarded alike (the try number read and
    a state it may be queued from), written as one UPDATE per group of instances that
    share a try number and target, and one multi-row INSERT of their history rows: a
    few statements per pass, not two per try. An instance another writer moved first
    is left out; a due sensor between pokes (a resumed try) goes through queue_try.
    Returns the workloads of the tries queued, in the given order.
    """
    queued: dict[int, Workload] = {}
    groups: dict[tuple[int, QueueTarget], list[Any]] = defaultdict(list)
    for ti, target in tries:
        if ti.state == TaskState.UP_FOR_RESCHEDULE.value:
            instance = session.get(TaskInstance, ti.id)
            workload = None
            if instance is not None and instance.try_number == ti.try_number:
                workload = queue_try(session, instance, job_id=job_id, now=now, **target._asdict())
            if workload is not None:
                queued[ti.id] = workload
            continue
        groups[(ti.try_number, target)].append(ti)
    expected = [TaskState.SCHEDULED.value, TaskState.NONE.value]
    history: list[dict[str, Any]] = []
    for (try_number, target), group in groups.items():
        for start in range(0, len(group), _CHUNK):
            chunk = group[start : start + _CHUNK]
            ids = [ti.id for ti in chunk]
            values = {
                "state": TaskState.QUEUED.value,
                "try_number": try_number + 1,
                "queued_at": now,
                "queue": target.queue,
                "fingerprint": target.fingerprint,
                "dag_version_id": target.dag_version_id,
                "queued_by_job_id": job_id,
                "hostname": None,
                "worker_nodename": None,
                "pid": None,
                "start_date": None,
                "end_date": None,
                "duration": None,
                "next_retry_at": None,
                "last_heartbeat": None,
            }
            changed = session.execute(
                update(TaskInstance)
                .where(
                    TaskInstance.id.in_(ids),
                    TaskInstance.try_number == try_number,
                    TaskInstance.state.in_(expected),
                )
                .values(values)
                .execution_options(synchronize_session=False)
            ).rowcount
            won = chunk
            if changed != len(chunk):
                # Some moved on since they were read: the ones this UPDATE queued are
                # those now queued at this try number, by this job, at this instant.
                mine = set(
                    session.scalars(
                        select(TaskInstance.id).where(
                            TaskInstance.id.in_(ids),
                            TaskInstance.state == TaskState.QUEUED.value,
                            TaskInstance.try_number == try_number + 1,
                            TaskInstance.queued_at == now,
                            _same(TaskInstance.queued_by_job_id, job_id),
                        )
                    )
                )
                won = [ti for ti in chunk if ti.id in mine]
            for ti in won:
                history.append(
                    {
                        "task_instance_id": ti.id,
                        "dag_id": ti.dag_id,
                        "run_id": ti.run_id,
                        "task_id": ti.task_id,
                        "map_index": ti.map_index,
                        "try_number": try_number + 1,
                        "state": TaskState.QUEUED.value,
                        "fingerprint": target.fingerprint,
                        "dag_version_id": target.dag_version_id,
                        "queued_at": now,
                    }
                )
                queued[ti.id] = _workload(session, ti, try_number + 1, target)
    for start in range(0, len(history), _CHUNK):
        session.execute(insert(TaskTry), history[start : start + _CHUNK])
    return [queued[ti.id] for ti, _ in tries if ti.id in queued]


def queued_workload(session: Session, ti: TaskInstance, target: QueueTarget) -> Workload:
    """The payload of the try ``ti`` is queued at, to send it again (a duplicate of a
    message claims nothing, so sending one twice never runs a try twice)."""
    return _workload(session, ti, ti.try_number, target)


def _workload(session: Session, ti: Any, try_number: int, target: QueueTarget) -> Workload:
    """The executor's payload for try ``try_number`` of instance ``ti`` (a row or a light
    row: ids and ``dag_run_id``), carrying its run's fields."""
    return Workload(
        ti_id=ti.id,
        dag_id=ti.dag_id,
        task_id=ti.task_id,
        run_id=ti.run_id,
        try_number=try_number,
        fingerprint=target.fingerprint,
        fileloc=target.fileloc,
        queue=target.queue,
        dag_version_id=target.dag_version_id,
        plugins=dict(target.plugins),
        map_index=ti.map_index,
        # The scheduler holds its runs in this session already (the identity map answers,
        # no query); at worst one read per run, never per try.
        run=run_fields(session.get(DagRun, ti.dag_run_id)),
    )


def run_fields(run: DagRun | None) -> dict[str, Any] | None:
    """What a try needs of its run, carried in its :class:`Workload` (JSON values): the
    scheduler has the run at hand when it queues, so the try need not read it again."""
    if run is None:
        return None
    fields = {key: getattr(run, key) for key in RUN_FIELDS}
    return {
        key: value.isoformat() if isinstance(value, datetime) else value
        for key, value in fields.items()
    }


def _same(column: Any, value: Any) -> ColumnElement[bool]:
    return column.is_(None) if value is None else column == value


def claim_try(
    session: Session,
    workload: Workload,
    *,
    hostname: str,
    nodename: str,
    pid: int,
    commit: bool = False,
) -> datetime | None:
    """queued -> running for exactly this try: its start time, or None (do not run it).

    One conditional UPDATE (and its history row's) names the message's ids as well as
    the try number and state, so a duplicate, stale or mismatched message claims
    nothing: no read before it; :func:`claim_refusal` tells why, in that rare case.
    With ``commit`` (the caller's transaction ends here) they may go with their
    COMMIT in one round trip (see :func:`_guarded_update`).
    """
    now = utcnow()
    claimed = _guarded_update(
        session,
        workload.ti_id,
        workload.try_number,
        (TaskState.QUEUED,),
        {
            "state": TaskState.RUNNING.value,
            "start_date": now,
            "hostname": hostname,
            "worker_nodename": nodename,
            "pid": pid,
        },
        instance_only={"last_heartbeat": now},
        match={
            "dag_id": workload.dag_id,
            "task_id": workload.task_id,
            "run_id": workload.run_id,
            "map_index": workload.map_index,
        },
        commit=commit,
    )
    return now if claimed else None


def claim_refusal(session: Session, workload: Workload) -> str:
    """Why :func:`claim_try` claimed nothing for this message (unknown, mismatched, stale)."""
    ti = session.get(TaskInstance, workload.ti_id)
    if ti is None:
        return f"unknown task instance {workload.ti_id} ({workload.describe()})"
    named = (workload.dag_id, workload.task_id, workload.run_id, workload.map_index)
    if named != (ti.dag_id, ti.task_id, ti.run_id, ti.map_index):
        index = f" map_index={ti.map_index}" if ti.map_index >= 0 else ""
        return (
            f"message names {workload.describe()} but task instance {ti.id} is "
            f"{ti.dag_id}.{ti.task_id}{index} run={ti.run_id}"
        )
    return (
        f"stale message for {workload.describe()}: the task is now {ti.state} "
        f"at try {ti.try_number} (duplicate delivery or already retried)"
    )


def heartbeat_try(session: Session, ti_id: int, try_number: int) -> bool:
    """Refresh the heartbeat; False if the try is no longer running (cleared, marked...)."""
    return _guarded_update(
        session, ti_id, try_number, (TaskState.RUNNING,), instance_only={"last_heartbeat": utcnow()}
    )


# --- the end of a try ----------------------------------------------------------------


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
    ti = _locked_instance(session, ti_id, try_number)
    if ti is None:
        return None
    started = ti.start_date or now
    duration = (now - started).total_seconds()
    if not _guarded_update(
        session,
        ti_id,
        try_number,
        (TaskState.RUNNING,),
        {"state": TaskState.UP_FOR_RESCHEDULE.value, "end_date": now},
        instance_only={
            "next_retry_at": reschedule_date,
            # Ready again at its reschedule date: queued in turn with tasks that became
            # ready before it, not ahead of them by its first scheduling (no starvation).
            "scheduled_at": reschedule_date,
            "duration": duration,
            "pid": None,
        },
        record_only=_history(rendered_fields),
    ):
        return None
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


def finish_try(
    session: Session,
    ti_id: int,
    try_number: int,
    *,
    success: bool,
    error: str | None = None,
    expected_states: tuple[TaskState, ...] = (TaskState.RUNNING,),
    interrupted: bool = False,
    rendered_fields: dict[str, Any] | None = None,
    request_callbacks: bool = False,
    force_fail: bool = False,
    started: datetime | None = None,
    outlets: bool = True,
    commit: bool = False,
) -> TaskState | None:
    """Record the end of a try and apply the retry policy.

    A failed try becomes ``up_for_retry`` while tries remain (due after the task's
    ``retry_delay``), else ``failed``; ``force_fail`` (AirflowFailException, a
    sensor's timeout) fails it outright. An ``interrupted`` try (shutdown) is
    retried at once without using up a retry.
    With ``request_callbacks`` (a failure decided outside the try's process: a
    zombie, a killed process), the task's failure or retry callback is requested
    from the callback runner in this same transaction.
    Returns the new state, or None if the try was not in ``expected_states``.

    A success whose claim time the caller knows (``started``, what :func:`claim_try`
    returned) and whose task has no dataset outlets (``outlets=False``) is one
    conditional UPDATE (and its history row's): nothing to read first; with
    ``commit`` (the caller writes nothing after it in this transaction), sent with
    its COMMIT in one round trip where the connection can (see :func:`_guarded_update`).
    """
    now = utcnow()
    if success and started is not None and not outlets:
        done = _guarded_update(
            session,
            ti_id,
            try_number,
            expected_states,
            {"end_date": now, "duration": (now - started).total_seconds()},
            instance_only={"pid": None, "state": TaskState.SUCCESS.value},
            record_only=_history(rendered_fields, state=TaskState.SUCCESS.value, error=error),
            commit=commit,
        )
        return TaskState.SUCCESS if done else None
    ti = _locked_instance(session, ti_id, try_number)
    if ti is None:
        return None
    instance: dict[str, Any] = {"pid": None}
    if success:
        new_state = TaskState.SUCCESS
    elif interrupted:
        new_state = TaskState.UP_FOR_RETRY
        instance["max_tries"] = ti.max_tries + 1
        instance["next_retry_at"] = now
    elif try_number <= ti.max_tries and not force_fail:
        new_state = TaskState.UP_FOR_RETRY
        instance["next_retry_at"] = now + retry_delay(session, ti)
    else:
        new_state = TaskState.FAILED
    instance["state"] = new_state.value
    ended = TaskState.SUCCESS if success else TaskState.FAILED
    if not _guarded_update(
        session,
        ti_id,
        try_number,
        expected_states,
        {"end_date": now, "duration": _duration(ti, now)},
        instance_only=instance,
        record_only=_history(rendered_fields, state=ended.value, error=error),
        # A max_tries read before another writer changed it must not decide the retry.
        guard=[TaskInstance.max_tries == ti.max_tries],
    ):
        return None
    if success:
        # In the same transaction as the success: an update is never recorded twice or lost.
        record_outlet_events(session, ti.dag_id, ti.task_id, ti.run_id, try_number, now)
    if request_callbacks and not success and not interrupted:
        kind = "task_failure" if new_state is TaskState.FAILED else "task_retry"
        _request_callback(session, kind, ti.dag_id, ti.run_id, ti.task_id, try_number, error)
    return new_state


def requeue_lost_try(
    session: Session,
    ti_id: int,
    try_number: int,
    *,
    reason: str,
    expected_states: tuple[TaskState, ...],
    max_lost: int,
) -> TaskState | None:
    """A try lost through no fault of the task: its worker died, or its message never
    reached one. The task did not fail, so the try is retried without spending one of
    its retries (``max_tries`` grows by one, ``lost_count`` counts it), at most
    ``max_lost`` times; past that a lost try is a plain failure (retry policy applies).

    The try's record keeps ``reason`` as its error. Returns the new state, or None
    if the try was not in ``expected_states`` (it moved on: someone else won).
    """
    ti = _locked_instance(session, ti_id, try_number)
    if ti is None or ti.state not in {state.value for state in expected_states}:
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
            expected_states=expected_states,
            request_callbacks=True,
        )
    now = utcnow()
    requeued = _guarded_update(
        session,
        ti_id,
        try_number,
        expected_states,
        {"end_date": now},
        instance_only={
            "state": TaskState.UP_FOR_RETRY.value,
            "max_tries": TaskInstance.max_tries + 1,
            "lost_count": TaskInstance.lost_count + 1,
            "next_retry_at": now,
            "pid": None,
        },
        record_only={
            "state": TaskState.FAILED.value,
            "error": (
                f"{reason}: re-queued without spending a retry "
                f"(lost {ti.lost_count + 1} of {max_lost} allowed)"
            ),
        },
        guard=[TaskInstance.lost_count == ti.lost_count],
    )
    return TaskState.UP_FOR_RETRY if requeued else None


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
    ti = _locked_instance(session, ti_id, try_number)
    if ti is None:
        return None
    skipped = _guarded_update(
        session,
        ti_id,
        try_number,
        (TaskState.RUNNING,),
        {"state": TaskState.SKIPPED.value, "end_date": now, "duration": _duration(ti, now)},
        instance_only={"pid": None},
        record_only=_history(rendered_fields, error=reason),
    )
    return TaskState.SKIPPED if skipped else None


# --- decisions on instances not running ----------------------------------------------


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


def apply_decisions(
    session: Session, decisions: Iterable[tuple[int, str, str]], now: datetime
) -> int:
    """Write the scheduler's trigger-rule decisions: (instance id, state it was decided
    from, new state), as bulk UPDATEs guarded by the state each was decided from, so a
    decision on a stale read (the try finished, was cleared or marked meanwhile) loses.

    Scheduling stamps ``scheduled_at`` (the queue's order); any other decision ends the
    instance. An open try (a task removed from the DAG while queued or running) has its
    history row closed with it. Returns how many instances changed.
    """
    groups: dict[tuple[str, str], list[int]] = defaultdict(list)
    for ti_id, old_state, new_state in decisions:
        groups[(old_state, new_state)].append(ti_id)
    changed = 0
    for (old_state, new_state), ti_ids in groups.items():
        stamp = "scheduled_at" if new_state == TaskState.SCHEDULED.value else "end_date"
        if old_state in OPEN_TRY_STATES:
            changed += _end_open_tries(
                session, ti_ids, (old_state,), {"state": new_state, stamp: now}, None
            )
            continue
        for start in range(0, len(ti_ids), _CHUNK):
            changed += session.execute(
                update(TaskInstance)
                .where(
                    TaskInstance.id.in_(ti_ids[start : start + _CHUNK]),
                    TaskInstance.state == old_state,
                )
                .values(state=new_state, **{stamp: now})
                .execution_options(synchronize_session=False)
            ).rowcount
    return changed


def _end_open_tries(
    session: Session,
    ti_ids: Collection[int],
    expected: Iterable[str],
    shared: Mapping[str, Any],
    error: str | None,
) -> int:
    """Guarded, one try at a time (each has its own try number): instances in
    ``expected`` states take ``shared`` values, and so do their open history rows."""
    expected = [str(state) for state in expected]
    rows = session.execute(
        select(TaskInstance.id, TaskInstance.try_number).where(
            TaskInstance.id.in_(list(ti_ids)), TaskInstance.state.in_(expected)
        )
    ).all()
    return sum(
        _guarded_update(session, ti_id, try_number, expected, shared, record_only={"error": error})
        for ti_id, try_number in rows
    )


def fail_unqueueable(session: Session, ti: TaskInstance, reason: str, now: datetime) -> bool:
    """A task that can never be queued as it stands (its pool does not exist) fails
    instead of waiting forever; False if it moved on since the scheduler read it.

    A due sensor between pokes has an open try: its history row ends with ``reason``.
    """
    return _end_as_read(session, ti, TaskState.FAILED, now, reason)


def _end_as_read(
    session: Session, ti: TaskInstance, state: TaskState, now: datetime, why: str
) -> bool:
    """End an instance in ``state``, guarded by the state and try it was read in; an
    open try (queued, running, between pokes) has its history row end alike, with ``why``."""
    ended = {"state": state.value, "end_date": now}
    open_try = ti.state in OPEN_TRY_STATES
    return _guarded_update(
        session,
        ti.id,
        ti.try_number,
        (ti.state,),
        ended if open_try else None,
        instance_only=ended,
        record_only={"error": why} if open_try else None,
    )


def time_out_run(session: Session, dag_run_id: int, reason: str) -> int:
    """Skip every unfinished task of a run past its ``dagrun_timeout``, as Airflow does.

    Running tries see their instance is no longer running at the next heartbeat and
    stop themselves; their history rows end here, with the reason. Returns how many.
    """
    now = utcnow()
    in_run = session.scalars(
        select(TaskInstance.id).where(TaskInstance.dag_run_id == dag_run_id)
    ).all()
    skipped = {"state": TaskState.SKIPPED.value, "end_date": now}
    ended = _end_open_tries(session, in_run, OPEN_TRY_STATES, skipped, reason)
    not_started = [TaskState.NONE.value, TaskState.SCHEDULED.value, TaskState.UP_FOR_RETRY.value]
    result = session.execute(
        update(TaskInstance)
        .where(TaskInstance.dag_run_id == dag_run_id, TaskInstance.state.in_(not_started))
        .values(**skipped)
        .execution_options(synchronize_session=False)
    )
    return ended + result.rowcount


# --- by hand: clear and mark ---------------------------------------------------------


def clear_tries(session: Session, cleared: Iterable[tuple[TaskInstance, int]]) -> list[str]:
    """Reset instances so they run again: back to ``none`` with their full retry budget
    (``retries`` each) from the try they are at; their try history is kept.

    Each is guarded by the state and try it was read in; an instance queued or running
    is never reset (its try would run twice). Returns the task ids that moved meanwhile
    and were not cleared, for the caller to refuse the whole clear.
    """
    moved = []
    for ti, retries in cleared:
        if ti.state in (TaskState.QUEUED.value, TaskState.RUNNING.value) or not _guarded_update(
            session,
            ti.id,
            ti.try_number,
            (ti.state,),
            instance_only={
                "state": TaskState.NONE.value,
                "max_tries": ti.try_number + retries,
                "end_date": None,
                "next_retry_at": None,
            },
        ):
            moved.append(ti.task_id)
    return moved


def mark_try(session: Session, ti: TaskInstance, state: TaskState, now: datetime) -> bool:
    """Mark an instance ``success`` or ``failed`` by hand, from the state it was read in.

    A running try learns at its next heartbeat and stops itself, its late result
    matching nothing; its history row (open if queued, running or between pokes)
    ends here with the marked state. False if the instance moved on meanwhile.
    """
    if state not in (TaskState.SUCCESS, TaskState.FAILED):
        raise ValueError(f"a task can only be marked success or failed, not '{state}'")
    return _end_as_read(session, ti, state, now, f"marked {state.value} by hand while {ti.state}")


# --- runs ----------------------------------------------------------------------------


def start_run(run: DagRun, now: datetime) -> None:
    """queued -> running: the scheduler found room for it under ``max_active_runs``."""
    run.state = RunState.RUNNING.value
    run.start_date = now


def reopen_run(run: DagRun) -> None:
    """A run with tasks cleared or marked runs again, to settle its state anew."""
    run.state = RunState.RUNNING.value
    run.end_date = None


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


def _unexpanded(session: Session, ti_id: int) -> Any:
    """The fields of a mapped task's unexpanded instance (map_index -1, state none)
    that its copies or its try record repeat; None if it is no longer that."""
    return session.execute(
        select(
            TaskInstance.try_number,
            TaskInstance.dag_run_id,
            TaskInstance.dag_id,
            TaskInstance.run_id,
            TaskInstance.task_id,
            TaskInstance.max_tries,
            TaskInstance.operator,
            TaskInstance.queue,
            TaskInstance.pool,
            TaskInstance.priority_weight,
        ).where(
            TaskInstance.id == ti_id,
            TaskInstance.map_index == -1,
            TaskInstance.state == TaskState.NONE.value,
        )
    ).one_or_none()


def expand_mapped(session: Session, ti_id: int, count: int, now: datetime) -> int:
    """none -> scheduled as ``count`` copies of a mapped task, map_index 0..count-1.

    As in Airflow the unexpanded instance (map_index -1) becomes copy 0 and the
    others are added beside it, all scheduled at once: their upstreams are done.
    Returns how many copies now exist (0 if someone else expanded it first).
    """
    ti = _unexpanded(session, ti_id) if count >= 1 else None
    if ti is None or not _guarded_update(
        session,
        ti_id,
        ti.try_number,
        (TaskState.NONE,),
        instance_only={"map_index": 0, "state": TaskState.SCHEDULED.value, "scheduled_at": now},
        guard=(TaskInstance.map_index == -1,),
    ):
        return 0
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
    for start in range(0, len(copies), _CHUNK):
        session.execute(insert(TaskInstance), copies[start : start + _CHUNK])
    return count


def end_unexpanded(
    session: Session, ti_id: int, state: TaskState, reason: str, now: datetime
) -> TaskState | None:
    """none -> skipped (nothing to map over) or failed (unmappable) for a mapped task
    that cannot expand; the reason is kept as a try's error where the task page shows it.
    """
    ti = _unexpanded(session, ti_id)
    if ti is None or not _guarded_update(
        session,
        ti_id,
        ti.try_number,
        (TaskState.NONE,),
        instance_only={"state": state.value, "start_date": now, "end_date": now, "try_number": 1},
        guard=(TaskInstance.map_index == -1,),
    ):
        return None
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
