"""ExternalTaskSensor: wait for a task (or a whole run) of another DAG, for the same
logical date or one shifted by ``execution_delta`` / ``execution_date_fn`` (as Airflow's)."""

from __future__ import annotations

import datetime
from collections.abc import Callable, Iterable
from typing import Any

from sqlalchemy import func, select

from flowsched.db.engine import session_scope
from flowsched.db.models import Dag, DagRun, DagVersion, TaskInstance
from flowsched.exceptions import DagDefinitionError, FlowschedError, SkipTask
from flowsched.sensors.base import BaseSensorOperator
from flowsched.state import RunState, TaskState
from flowsched.timezone import to_utc


class ExternalTaskFailed(FlowschedError):
    """The awaited task or run ended in one of ``failed_states``, or does not exist."""


def _states(name: str, value: Iterable[str] | None, task_id: str, default: list[str]) -> list[str]:
    states = list(default if value is None else value)
    known = {s.value for s in TaskState} | {s.value for s in RunState}
    unknown = [state for state in states if state not in known]
    if unknown:
        raise DagDefinitionError(f"task '{task_id}': {name} has unknown states {unknown}")
    return states


class ExternalTaskSensor(BaseSensorOperator):
    template_fields = ("external_dag_id", "external_task_id", "external_task_ids")

    def __init__(
        self,
        task_id: str,
        *,
        external_dag_id: str,
        external_task_id: str | None = None,
        external_task_ids: Iterable[str] | None = None,
        allowed_states: Iterable[str] | None = None,
        skipped_states: Iterable[str] | None = None,
        failed_states: Iterable[str] | None = None,
        execution_delta: datetime.timedelta | None = None,
        execution_date_fn: Callable[..., Any] | None = None,
        check_existence: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(task_id, **kwargs)
        if external_task_id is not None and external_task_ids is not None:
            raise DagDefinitionError(
                f"task '{task_id}': give external_task_id or external_task_ids, not both"
            )
        if execution_delta is not None and execution_date_fn is not None:
            raise DagDefinitionError(
                f"task '{task_id}': give execution_delta or execution_date_fn, not both"
            )
        self.allowed_states = _states("allowed_states", allowed_states, task_id, ["success"])
        self.skipped_states = _states("skipped_states", skipped_states, task_id, [])
        self.failed_states = _states("failed_states", failed_states, task_id, [])
        overlap = set(self.allowed_states) & set(self.failed_states + self.skipped_states)
        if overlap:
            raise DagDefinitionError(
                f"task '{task_id}': states {sorted(overlap)} are both allowed and failed/skipped"
            )
        self.external_dag_id = external_dag_id
        self.external_task_id = external_task_id
        self.external_task_ids = (
            [external_task_id]
            if external_task_id is not None
            else (list(external_task_ids) if external_task_ids is not None else None)
        )
        self.execution_delta = execution_delta
        self.execution_date_fn = execution_date_fn
        self.check_existence = check_existence

    def _dates(self, context: dict[str, Any]) -> list[datetime.datetime]:
        logical = context["logical_date"]
        if self.execution_delta is not None:
            dates: Any = logical - self.execution_delta
        elif self.execution_date_fn is not None:
            from flowsched.operators.python import call_with_context

            dates = call_with_context(self.execution_date_fn, (logical,), {}, context)
        else:
            dates = logical
        return [to_utc(d) for d in (dates if isinstance(dates, list | tuple) else [dates])]

    def poke(self, context: dict[str, Any]) -> bool:
        dates = self._dates(context)
        task_ids = self.external_task_ids
        with session_scope(read_only=True) as session:
            if self.check_existence:
                self._check_existence(session)
            allowed = self._count(session, dates, self.allowed_states)
            if self.failed_states and self._count(session, dates, self.failed_states):
                what = f"tasks {task_ids}" if task_ids else "run"
                message = f"the external {what} of DAG '{self.external_dag_id}' failed"
                if self.soft_fail:
                    raise SkipTask(message)
                raise ExternalTaskFailed(message)
            if self.skipped_states and self._count(session, dates, self.skipped_states):
                raise SkipTask(f"the external DAG '{self.external_dag_id}' was skipped")
        return allowed == len(dates) * (len(task_ids) if task_ids else 1)

    def _count(self, session: Any, dates: list[datetime.datetime], states: list[str]) -> int:
        if self.external_task_ids:
            query = (
                select(func.count())
                .select_from(TaskInstance)
                .join(DagRun, DagRun.id == TaskInstance.dag_run_id)
                .where(
                    TaskInstance.dag_id == self.external_dag_id,
                    TaskInstance.task_id.in_(self.external_task_ids),
                    TaskInstance.state.in_(states),
                    DagRun.logical_date.in_(dates),
                )
            )
        else:
            query = select(func.count()).where(
                DagRun.dag_id == self.external_dag_id,
                DagRun.state.in_(states),
                DagRun.logical_date.in_(dates),
            )
        return int(session.scalar(query) or 0)

    def _check_existence(self, session: Any) -> None:
        dag = session.get(Dag, self.external_dag_id)
        if dag is None:
            raise ExternalTaskFailed(f"the external DAG '{self.external_dag_id}' does not exist")
        if not self.external_task_ids:
            return
        version = session.get(DagVersion, dag.latest_version_id) if dag.latest_version_id else None
        known = {t["task_id"] for t in version.serialized["tasks"]} if version else set()
        missing = sorted(set(self.external_task_ids) - known)
        if missing:
            raise ExternalTaskFailed(
                f"the external DAG '{self.external_dag_id}' has no task {', '.join(missing)}"
            )
