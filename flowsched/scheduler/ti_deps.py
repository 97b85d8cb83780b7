"""Why a task instance is not queued: Airflow's "failed dependencies", on demand.

The scheduler decides with the same functions (trigger rules, past dependence,
concurrency limits); this module only asks them again for one instance, so the
CLI (``tasks failed-deps``), the API and the task page can show the reasons
without the scheduler storing them on every pass.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from flowsched.db.models import Dag, DagRun, DagVersion, TaskInstance
from flowsched.scheduler.concurrency import Concurrency, slots_reader
from flowsched.scheduler.dependencies import Decision, evaluate
from flowsched.scheduler.past_dependence import past_blockers
from flowsched.serialization import SerializedDAG
from flowsched.state import RunState, TaskState


@dataclass(frozen=True)
class FailedDependency:
    name: str  # Airflow's dependency name, e.g. "Previous Dagrun State"
    reason: str


def failed_dependencies(
    session: Session, ti: TaskInstance, dag: SerializedDAG | None = None
) -> list[FailedDependency]:
    """What holds ``ti`` back from being queued now; empty when nothing does.

    ``dag`` is the DAG's latest serialized form, read here unless given (a caller
    asking about many instances of one DAG reads it once).
    """
    if ti.state not in (TaskState.NONE.value, TaskState.SCHEDULED.value):
        return [FailedDependency("Task Instance State", f"Task is in the '{ti.state}' state.")]
    run = session.get(DagRun, ti.dag_run_id)
    assert run is not None
    failed: list[FailedDependency] = []
    if run.state != RunState.RUNNING.value:
        failed.append(
            FailedDependency(
                "Dagrun Running",
                "Task instance's dagrun was not in the 'running' state but in the state "
                f"'{run.state}'.",
            )
        )
    dag = dag or latest_dag(session, ti.dag_id)
    spec = dag.tasks.get(ti.task_id) if dag else None
    if dag is None or spec is None:
        return [*failed, FailedDependency("Task In DAG", "The task is no longer in its DAG.")]
    if ti.state == TaskState.NONE.value:
        states = dict(
            session.execute(
                select(TaskInstance.task_id, TaskInstance.state).where(
                    TaskInstance.dag_run_id == run.id, TaskInstance.task_id.in_(spec.upstream)
                )
            ).all()
        )
        upstream = [states.get(up, TaskState.NONE.value) for up in spec.upstream]
        if evaluate(spec.trigger_rule, upstream) is not Decision.READY:
            done = sum(state != TaskState.NONE.value for state in upstream)
            failed.append(
                FailedDependency(
                    "Trigger Rule",
                    f"Task's trigger rule '{spec.trigger_rule.value}' requires its upstream "
                    f"tasks to be in a matching state; upstream states: "
                    f"{_summary(spec.upstream, upstream)} ({done} of {len(upstream)} started).",
                )
            )
        past = past_blockers(session, run, dag, [ti.task_id]).get(ti.task_id)
        if past is not None:
            failed.append(FailedDependency("Previous Dagrun State", past))
    if ti.state == TaskState.SCHEDULED.value:
        limits = Concurrency.load(session, [dag.dag_id], slots_reader(session), lock=False)
        reason = limits.blocker(dag, spec, run.id)
        if reason is not None:
            failed.append(FailedDependency("Concurrency Limits", reason))
    return failed


def _summary(task_ids: tuple[str, ...], states: list[str]) -> str:
    return ", ".join(f"{task_id}={state}" for task_id, state in zip(task_ids, states, strict=True))


def latest_dag(session: Session, dag_id: str) -> SerializedDAG | None:
    version = session.scalar(
        select(DagVersion)
        .join(Dag, Dag.latest_version_id == DagVersion.id)
        .where(Dag.dag_id == dag_id)
    )
    return SerializedDAG(version.serialized) if version else None
