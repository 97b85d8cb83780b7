"""``depends_on_past`` and ``wait_for_downstream``, as Airflow's PrevDagrunDep.

A task with ``depends_on_past`` runs in a run only once its instance in the
previous run (by logical date) succeeded or was skipped; with
``wait_for_downstream`` also that instance's direct downstream tasks. With no
previous run it runs; with a previous run that lacks the task (it was added
since) it runs only if ``ignore_first_depends_on_past`` and the task has never
had an instance before. Decided from the serialized DAG and the database.
"""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import exists, select
from sqlalchemy.orm import Session

from flowsched.db.models import DagRun, TaskInstance
from flowsched.serialization import SerializedDAG, TaskSpec
from flowsched.state import TaskState

DONE = (TaskState.SUCCESS.value, TaskState.SKIPPED.value)


def past_blockers(
    session: Session, run: DagRun, dag: SerializedDAG, task_ids: Iterable[str]
) -> dict[str, str]:
    """{task id: why it waits} for those of ``task_ids`` held back by a previous run."""
    specs = [dag.tasks[t] for t in task_ids if t in dag.tasks and dag.tasks[t].depends_on_past]
    if not specs:
        return {}
    previous = session.execute(
        select(DagRun.id, DagRun.run_id)
        .where(DagRun.dag_id == run.dag_id, DagRun.logical_date < run.logical_date)
        .order_by(DagRun.logical_date.desc())
        .limit(1)
    ).first()
    if previous is None:
        return {}  # the first run: "the first task instance for its task"
    states = dict(
        session.execute(
            select(TaskInstance.task_id, TaskInstance.state).where(
                TaskInstance.dag_run_id == previous.id
            )
        ).all()
    )
    blockers: dict[str, str] = {}
    for spec in specs:
        reason = _blocker(session, run, dag, spec, previous.run_id, states)
        if reason is not None:
            blockers[spec.task_id] = reason
    return blockers


def _blocker(
    session: Session,
    run: DagRun,
    dag: SerializedDAG,
    spec: TaskSpec,
    previous_run_id: str,
    states: dict[str, str],
) -> str | None:
    previous = f"<{dag.dag_id}.{spec.task_id} {previous_run_id}>"
    state = states.get(spec.task_id)
    if state is None:
        if spec.ignore_first_depends_on_past and not _ran_before(session, run, spec.task_id):
            return None
        return (
            "depends_on_past is true for this task's DAG, but the previous task instance "
            "has not run yet."
        )
    if state not in DONE:
        return (
            f"depends_on_past is true for this task, but the previous task instance "
            f"{previous} is in the state '{state}' which is not a successful state."
        )
    if spec.wait_for_downstream:
        waiting = sorted(t for t in dag.downstream[spec.task_id] if states.get(t) not in DONE)
        if waiting:
            return (
                f"The tasks downstream of the previous task instance {previous} haven't "
                f"completed (and wait_for_downstream is True): {', '.join(waiting)}."
            )
    return None


def _ran_before(session: Session, run: DagRun, task_id: str) -> bool:
    """Whether ``task_id`` has an instance in any run before ``run``."""
    return bool(
        session.scalar(
            select(
                exists().where(
                    TaskInstance.dag_id == run.dag_id,
                    TaskInstance.task_id == task_id,
                    TaskInstance.dag_run_id == DagRun.id,
                    DagRun.logical_date < run.logical_date,
                )
            )
        )
    )
