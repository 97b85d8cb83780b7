"""What operators do to DAGs and runs: trigger, pause, clear, mark, delete.

The CLI and the webserver both call these functions, so an action behaves the
same wherever it is taken from, and each writes an audit row.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Collection
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from flowsched.dataset_events import remove_dag_references
from flowsched.db.engine import session_scope
from flowsched.db.models import (
    AuditLog,
    Dag,
    DagRun,
    DagVersion,
    ImportError_,
    Pool,
    TaskInstance,
    TaskReschedule,
    TaskTry,
    XCom,
)
from flowsched.exceptions import DagNotFound, DagRunNotFound, FlowschedError
from flowsched.ids import validate_run_id
from flowsched.lifecycle import clear_tries, mark_try, reopen_run
from flowsched.params import validate_run_params
from flowsched.run_conf import check_conf_size
from flowsched.scheduler.concurrency import Concurrency, slots_reader
from flowsched.scheduler.runs import create_run, latest_version, make_run_id
from flowsched.scheduler.ti_deps import FailedDependency, failed_dependencies, latest_dag
from flowsched.schedules import Interval
from flowsched.serialization import SerializedDAG
from flowsched.state import RunState, RunType, TaskState
from flowsched.timezone import utcnow


def audit(
    session: Session,
    event: str,
    *,
    actor: str | None = None,
    dag_id: str | None = None,
    run_id: str | None = None,
    task_id: str | None = None,
    extra: dict[str, Any] | None = None,
) -> None:
    session.add(
        AuditLog(
            created_at=utcnow(),
            event=event,
            actor=actor,
            dag_id=dag_id,
            run_id=run_id,
            task_id=task_id,
            extra=extra,
        )
    )


def get_dag(session: Session, dag_id: str) -> Dag:
    dag = session.get(Dag, dag_id)
    if dag is None:
        raise DagNotFound(f"no DAG '{dag_id}'")
    return dag


def get_run(session: Session, dag_id: str, run_id: str) -> DagRun:
    run = session.scalar(select(DagRun).where(DagRun.dag_id == dag_id, DagRun.run_id == run_id))
    if run is None:
        raise DagRunNotFound(f"DAG '{dag_id}' has no run '{run_id}'")
    return run


def trigger_dag(
    dag_id: str,
    *,
    conf: dict[str, Any] | None = None,
    run_id: str | None = None,
    logical_date: datetime | None = None,
    actor: str | None = None,
    triggered_by: tuple[str, str, str] | None = None,
) -> DagRun:
    """Create a manual run; ``triggered_by`` is the (dag id, run id, task id) of the
    TriggerDagRunOperator that asked for it, kept on the run for the link back."""
    if conf is not None and not isinstance(conf, dict):
        raise FlowschedError("run conf must be a JSON object")
    if run_id is not None:
        validate_run_id(run_id)  # before any database work; create_run checks again
    check_conf_size(conf)
    now = utcnow()
    logical_date = logical_date or now
    with session_scope() as session:
        get_dag(session, dag_id)
        _, version = latest_version(session, dag_id)
        # The one check of a run's params, whichever way it is triggered (CLI, API, page).
        validate_run_params(version.serialized.get("param_specs", {}), conf)
        run = create_run(
            session,
            dag_id,
            run_type=RunType.MANUAL,
            logical_date=logical_date,
            interval=None,
            now=now,
            conf=conf,
            run_id=run_id or make_run_id(RunType.MANUAL, logical_date),
        )
        if triggered_by is not None:
            (run.triggered_by_dag_id, run.triggered_by_run_id, run.triggered_by_task_id) = (
                triggered_by
            )
        audit(session, "trigger", actor=actor, dag_id=dag_id, run_id=run.run_id, extra=conf)
        session.flush()
        session.expunge(run)
        return run


def backfill(dag_id: str, start: datetime, end: datetime, *, actor: str | None = None) -> list[str]:
    """Create a backfill run for every interval whose start lies in [start, end]."""
    if end < start:
        raise FlowschedError("backfill end date is before its start date")
    now = utcnow()
    created: list[str] = []
    with session_scope() as session:
        _, version = latest_version(session, dag_id)
        dag = SerializedDAG(version.serialized)
        intervals: list[Interval] = dag.schedule.intervals_between(start, end)
        if not intervals:
            raise FlowschedError(f"DAG '{dag_id}' has no schedule intervals between those dates")
        for interval in intervals:
            run_id = make_run_id(RunType.BACKFILL, interval.start)
            exists = session.scalar(
                select(DagRun.id).where(
                    DagRun.dag_id == dag_id, DagRun.logical_date == interval.start
                )
            )
            if exists:
                continue
            create_run(
                session,
                dag_id,
                run_type=RunType.BACKFILL,
                logical_date=interval.start,
                interval=interval,
                now=now,
                run_id=run_id,
            )
            created.append(run_id)
        audit(session, "backfill", actor=actor, dag_id=dag_id, extra={"runs": created})
    return created


def set_paused(dag_id: str, paused: bool, *, actor: str | None = None) -> None:
    with session_scope() as session:
        get_dag(session, dag_id).is_paused = paused
        audit(session, "pause" if paused else "unpause", actor=actor, dag_id=dag_id)


@dataclass
class ClearResult:
    cleared: list[tuple[str, str]] = field(default_factory=list)


def clear_tasks(
    dag_id: str,
    *,
    task_regex: str | None = None,
    run_id: str | None = None,
    only_failed: bool = False,
    upstream: bool = False,
    downstream: bool = False,
    past: bool = False,
    future: bool = False,
    dry_run: bool = False,
    reset_dag_runs: bool = True,
    actor: str | None = None,
    map_indexes: Collection[int] | None = None,
) -> ClearResult:
    """Reset matching task instances so they run again; successes elsewhere stay.

    ``upstream``/``downstream`` add the selected tasks' ancestors/descendants;
    ``past``/``future`` (with ``run_id``) add the runs before/after that one, as
    Airflow's clear does. A cleared instance keeps its try history and gets its
    full retry budget again; its run goes back to running (unless not
    ``reset_dag_runs``). ``dry_run`` only reports what would be cleared.
    ``map_indexes`` clears only those copies of the selected mapped tasks (Airflow's
    per-index clear); their relatives are cleared whole.
    """
    try:
        pattern = re.compile(task_regex) if task_regex else None
    except re.error as exc:
        raise FlowschedError(f"bad --task regex {task_regex!r}: {exc}") from None
    result = ClearResult()
    with session_scope() as session:
        _, version = latest_version(session, dag_id)
        dag = SerializedDAG(version.serialized)
        selected = {t for t in dag.tasks if pattern is None or pattern.search(t)}
        if pattern is not None and not selected:
            raise FlowschedError(f"no task of DAG '{dag_id}' matches {task_regex!r}")
        for run in _runs_around(session, dag_id, run_id, past=past, future=future):
            tis: dict[str, list[TaskInstance]] = defaultdict(list)
            for ti in session.scalars(
                select(TaskInstance)
                .where(TaskInstance.dag_run_id == run.id)
                .order_by(TaskInstance.map_index)
            ):
                if map_indexes is None or ti.task_id not in selected or ti.map_index in map_indexes:
                    tis[ti.task_id].append(ti)
            failed = (TaskState.FAILED.value, TaskState.UPSTREAM_FAILED.value)
            if only_failed:
                # A mapped task's copies are cleared one by one: only the failed ones.
                for task_id in selected:
                    tis[task_id] = [ti for ti in tis.get(task_id, []) if ti.state in failed]
            targets = {task_id for task_id in selected if tis.get(task_id)}
            targets |= _relatives(dag, targets, upstream=upstream, downstream=downstream)
            targets = {t for t in targets if tis.get(t)}
            busy = sorted(
                {t for t in targets for ti in tis[t] if ti.state in ("running", "queued")}
            )
            if busy:
                raise FlowschedError(
                    f"run '{run.run_id}': {', '.join(busy)} still queued or running; "
                    "wait for them or mark them first"
                )
            if not targets:
                continue
            result.cleared.extend((run.run_id, task_id) for task_id in sorted(targets))
            if dry_run:
                continue
            ids = [ti.id for t in targets for ti in tis[t]]
            session.execute(delete(XCom).where(XCom.task_instance_id.in_(ids)))
            moved = clear_tries(
                session,
                [
                    (ti, spec.retries if (spec := dag.tasks.get(t)) else 0)
                    for t in sorted(targets)
                    for ti in tis[t]
                ],
            )
            if moved:
                raise FlowschedError(
                    f"run '{run.run_id}': {', '.join(moved)} changed state while being "
                    "cleared; nothing was cleared, try again"
                )
            if reset_dag_runs:
                reopen_run(run)
        if dry_run:
            session.rollback()
            return result
        audit(
            session,
            "clear",
            actor=actor,
            dag_id=dag_id,
            run_id=run_id,
            extra={
                "task_regex": task_regex,
                "only_failed": only_failed,
                "upstream": upstream,
                "downstream": downstream,
                "past": past,
                "future": future,
                "count": len(result.cleared),
                "map_indexes": sorted(map_indexes) if map_indexes is not None else None,
            },
        )
    return result


def _runs_around(
    session: Session, dag_id: str, run_id: str | None, *, past: bool, future: bool
) -> list[DagRun]:
    """The run ``run_id`` and, as asked, the runs before and after it (by logical date);
    every run of the DAG when no run is named."""
    query = select(DagRun).where(DagRun.dag_id == dag_id)
    if run_id is None:
        if past or future:
            raise FlowschedError("past/future need a run to count from: name the run")
        return list(session.scalars(query.order_by(DagRun.logical_date)).all())
    anchor = get_run(session, dag_id, run_id)
    if not past:
        query = query.where(DagRun.logical_date >= anchor.logical_date)
    if not future:
        query = query.where(DagRun.logical_date <= anchor.logical_date)
    if not past and not future:
        query = query.where(DagRun.id == anchor.id)  # not another run of the same date
    return list(session.scalars(query.order_by(DagRun.logical_date)).all())


def _relatives(
    dag: SerializedDAG, roots: set[str], *, upstream: bool, downstream: bool
) -> set[str]:
    """Every task upstream and/or downstream of ``roots`` (transitively), not the roots."""
    seen: set[str] = set()
    edges = []
    if downstream:
        edges.append(dag.downstream)
    if upstream:
        edges.append({t: list(spec.upstream) for t, spec in dag.tasks.items()})
    for following in edges:
        stack = list(roots)
        while stack:
            for other in following.get(stack.pop(), []):
                if other not in seen and other not in roots:
                    seen.add(other)
                    stack.append(other)
    return seen


def mark_task(
    dag_id: str, run_id: str, task_id: str, state: TaskState, *, actor: str | None = None
) -> None:
    """Mark one instance success or failed by hand; a running try is told to stop."""
    mark_tasks(dag_id, run_id, task_id, state, actor=actor)


def mark_tasks(
    dag_id: str,
    run_id: str,
    task_id: str,
    state: TaskState,
    *,
    upstream: bool = False,
    downstream: bool = False,
    past: bool = False,
    future: bool = False,
    dry_run: bool = False,
    actor: str | None = None,
) -> list[tuple[str, str]]:
    """Mark a task (and, as asked, its relatives in this and past/future runs) success or
    failed, as Airflow's "mark success/failed"; returns the (run_id, task_id) changed.

    Instances already in ``state`` are left alone; a running try is told to stop.
    """
    if state not in (TaskState.SUCCESS, TaskState.FAILED):
        raise FlowschedError("a task can only be marked success or failed")
    changed: list[tuple[str, str]] = []
    with session_scope() as session:
        try:
            anchor = get_run(session, dag_id, run_id)
        except DagRunNotFound:
            if session.scalar(
                select(DagRun.id).where(DagRun.dag_id == dag_id, DagRun.run_id == task_id)
            ):
                raise FlowschedError(
                    f"'{task_id}' is a run of '{dag_id}' and '{run_id}' is not: the task and the "
                    f"run look swapped; the order is DAG TASK RUN, as in `flowsched tasks run` "
                    f"(here: {dag_id} {run_id} {task_id})"
                ) from None
            raise
        tis_of_anchor = session.scalar(
            select(TaskInstance).where(
                TaskInstance.dag_run_id == anchor.id, TaskInstance.task_id == task_id
            )
        )
        if tis_of_anchor is None:
            raise FlowschedError(f"run '{run_id}' of '{dag_id}' has no task '{task_id}'")
        _, version = latest_version(session, dag_id)
        dag = SerializedDAG(version.serialized)
        wanted = {task_id} | _relatives(dag, {task_id}, upstream=upstream, downstream=downstream)
        now = utcnow()
        for run in _runs_around(session, dag_id, run_id, past=past, future=future):
            tis = session.scalars(
                select(TaskInstance).where(
                    TaskInstance.dag_run_id == run.id, TaskInstance.task_id.in_(sorted(wanted))
                )
            ).all()
            for ti in sorted(tis, key=lambda t: t.task_id):
                if ti.state == state.value:
                    continue
                changed.append((run.run_id, ti.task_id))
                if dry_run:
                    continue
                if not mark_try(session, ti, state, now):
                    raise FlowschedError(
                        f"run '{run.run_id}': {ti.task_id} changed state while being "
                        f"marked {state.value}; nothing was marked, try again"
                    )
                if run.state in (RunState.SUCCESS.value, RunState.FAILED.value):
                    reopen_run(run)
        if dry_run:
            session.rollback()
            return changed
        audit(
            session,
            f"mark_{state.value}",
            actor=actor,
            dag_id=dag_id,
            run_id=run_id,
            task_id=task_id,
            extra={
                "upstream": upstream,
                "downstream": downstream,
                "past": past,
                "future": future,
                "count": len(changed),
            },
        )
    return changed


@dataclass
class DeleteResult:
    counts: dict[str, int]


def delete_dag(dag_id: str, *, force: bool = False, actor: str | None = None) -> DeleteResult:
    """Remove a DAG and every row that refers to it, in one transaction.

    Refuses while a run is running (its tasks would write to deleted rows)
    unless ``force``. The DAG comes back on the next parse if its file is
    still in the DAGs folder: delete the file first.
    """
    with session_scope() as session:
        dag = get_dag(session, dag_id)
        active = session.scalar(
            select(func.count())
            .select_from(DagRun)
            .where(
                DagRun.dag_id == dag_id,
                DagRun.state.in_([RunState.RUNNING.value, RunState.QUEUED.value]),
            )
        )
        if active and not force:
            raise FlowschedError(
                f"DAG '{dag_id}' has {active} queued or running run(s); "
                "wait for them, or force the deletion"
            )
        counts: dict[str, int] = {}
        for name, model in (
            ("xcom", XCom),
            ("task_reschedule", TaskReschedule),
            ("task_try", TaskTry),
            ("task_instance", TaskInstance),
            ("dag_run", DagRun),
            ("dag_version", DagVersion),
            ("audit_log", AuditLog),
        ):
            counts[name] = session.execute(delete(model).where(model.dag_id == dag_id)).rowcount
        counts["import_error"] = session.execute(
            delete(ImportError_).where(ImportError_.filename == dag.fileloc)
        ).rowcount
        remove_dag_references(session, dag_id)
        session.delete(dag)
        counts["dag"] = 1
        audit(session, "delete_dag", actor=actor, dag_id=None, extra={"dag_id": dag_id, **counts})
    return DeleteResult(counts)


def task_states(dag_id: str, run_id: str) -> list[TaskInstance]:
    with session_scope(read_only=True) as session:
        run = get_run(session, dag_id, run_id)
        tis = session.scalars(
            select(TaskInstance)
            .where(TaskInstance.dag_run_id == run.id)
            .order_by(TaskInstance.id, TaskInstance.map_index)
        ).all()
        for ti in tis:
            session.expunge(ti)
        return list(tis)


def failed_deps(dag_id: str, run_id: str, task_id: str) -> list[FailedDependency]:
    """Why a task of a run is not queued yet (Airflow's ``tasks failed-deps``)."""
    with session_scope(read_only=True) as session:
        run = get_run(session, dag_id, run_id)
        ti = session.scalar(
            select(TaskInstance).where(
                TaskInstance.dag_run_id == run.id, TaskInstance.task_id == task_id
            )
        )
        if ti is None:
            raise FlowschedError(f"run '{run_id}' of '{dag_id}' has no task '{task_id}'")
        return failed_dependencies(session, ti)


def waiting_reasons(dag_id: str, run_id: str) -> dict[str, str]:
    """{task id: what holds it back} for the run's tasks not queued yet, for `tasks states`."""
    with session_scope(read_only=True) as session:
        run = get_run(session, dag_id, run_id)
        waiting = session.scalars(
            select(TaskInstance).where(
                TaskInstance.dag_run_id == run.id,
                TaskInstance.state.in_([TaskState.NONE.value, TaskState.SCHEDULED.value]),
            )
        ).all()
        dag = latest_dag(session, dag_id)
        reasons = {ti.task_id: failed_dependencies(session, ti, dag) for ti in waiting}
    return {
        task_id: "; ".join(f"{dep.name}: {dep.reason}" for dep in deps)
        for task_id, deps in reasons.items()
        if deps
    }


def try_errors(dag_id: str, run_id: str) -> dict[tuple[str, int], str]:
    """The error of each task instance's current try in a run, by (task_id, map_index)."""
    with session_scope(read_only=True) as session:
        run = get_run(session, dag_id, run_id)
        rows = session.execute(
            select(TaskTry.task_id, TaskInstance.map_index, TaskTry.error)
            .join(TaskInstance, TaskInstance.id == TaskTry.task_instance_id)
            .where(
                TaskInstance.dag_run_id == run.id,
                TaskTry.try_number == TaskInstance.try_number,
                TaskTry.error.is_not(None),
            )
        ).all()
    return {(task_id, map_index): error for task_id, map_index, error in rows}


def run_is_finished(dag_id: str, run_id: str) -> bool:
    with session_scope() as session:
        return get_run(session, dag_id, run_id).state in (
            RunState.SUCCESS.value,
            RunState.FAILED.value,
        )


def set_pool(
    name: str, slots: int, description: str | None = None, *, actor: str | None = None
) -> None:
    """Create or resize a pool: at most ``slots`` of its tasks queued or running at once."""
    if slots < 0:
        raise FlowschedError(f"pool '{name}': slots must be >= 0, got {slots}")
    with session_scope() as session:
        pool = session.scalar(select(Pool).where(Pool.name == name))
        if pool is None:
            session.add(Pool(name=name, slots=slots, description=description))
        else:
            pool.slots = slots
            if description is not None:
                pool.description = description
        audit(session, "set_pool", actor=actor, extra={"pool": name, "slots": slots})


def delete_pool(name: str, *, actor: str | None = None) -> None:
    """Delete a pool; refused for the default pool and while tasks of it are active."""
    if name == "default_pool":
        raise FlowschedError("the default pool cannot be deleted")
    with session_scope() as session:
        pool = session.scalar(select(Pool).where(Pool.name == name))
        if pool is None:
            raise FlowschedError(f"no pool '{name}'")
        busy = session.scalar(
            select(func.count())
            .select_from(TaskInstance)
            .where(
                TaskInstance.pool == name,
                TaskInstance.state.in_([TaskState.QUEUED.value, TaskState.RUNNING.value]),
            )
        )
        if busy:
            raise FlowschedError(f"pool '{name}' has {busy} queued or running task(s)")
        session.delete(pool)
        audit(session, "delete_pool", actor=actor, extra={"pool": name})


def list_pools() -> list[tuple[str, int, int, str | None]]:
    """(name, slots, slots taken by tries queued or running, description) for every pool."""
    with session_scope(read_only=True) as session:
        used = Concurrency.load(session, (), slots_reader(session), lock=False).pool_used
        return [
            (pool.name, pool.slots, used.get(pool.name, 0), pool.description)
            for pool in session.scalars(select(Pool).order_by(Pool.name))
        ]
