"""TriggerDagRunOperator: start a run of another DAG, optionally waiting for its end
(Airflow's airflow.operators.trigger_dagrun, same arguments and XCom keys)."""

from __future__ import annotations

import datetime
import logging
import time
from collections.abc import Iterable
from typing import Any

from sqlalchemy import select

from flowsched.db.engine import session_scope
from flowsched.db.models import DagRun
from flowsched.exceptions import DagDefinitionError, FlowschedError
from flowsched.operators.base import BaseOperator
from flowsched.state import RunState
from flowsched.timezone import parse_datetime, to_utc, utcnow

log = logging.getLogger("flowsched.task")

XCOM_RUN_ID = "trigger_run_id"
XCOM_LOGICAL_DATE = "trigger_logical_date"


class DagRunAlreadyExists(FlowschedError):
    """The run to trigger exists and ``reset_dag_run`` is False."""


class TriggeredRunFailed(FlowschedError):
    """The triggered run ended in one of ``failed_states``."""


class TriggerDagRunOperator(BaseOperator):
    template_fields = ("trigger_dag_id", "trigger_run_id", "logical_date", "conf")

    def __init__(
        self,
        task_id: str,
        *,
        trigger_dag_id: str,
        trigger_run_id: str | None = None,
        conf: dict[str, Any] | None = None,
        logical_date: str | datetime.datetime | None = None,
        reset_dag_run: bool = False,
        wait_for_completion: bool = False,
        poke_interval: float = 60,
        allowed_states: Iterable[str] | None = None,
        failed_states: Iterable[str] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(task_id, **kwargs)
        if conf is not None and not isinstance(conf, dict):
            raise DagDefinitionError(f"task '{task_id}': conf must be a dict, got {conf!r}")
        self.trigger_dag_id = trigger_dag_id
        self.trigger_run_id = trigger_run_id
        self.conf = conf
        if isinstance(logical_date, datetime.datetime):
            logical_date = logical_date.isoformat()
        self.logical_date = logical_date
        self.reset_dag_run = reset_dag_run
        self.wait_for_completion = wait_for_completion
        self.poke_interval = poke_interval
        self.allowed_states = list(allowed_states or [RunState.SUCCESS.value])
        self.failed_states = list(failed_states or [RunState.FAILED.value])
        known = {state.value for state in RunState}
        unknown = sorted(set(self.allowed_states + self.failed_states) - known)
        if unknown:
            raise DagDefinitionError(
                f"task '{task_id}': unknown run states {unknown} (known: {sorted(known)})"
            )

    def execute(self, context: dict[str, Any]) -> None:
        from flowsched.operations import clear_tasks, trigger_dag

        logical_date = (
            to_utc(parse_datetime(str(self.logical_date))) if self.logical_date else utcnow()
        )
        triggered_by = (context["dag_id"], context["run_id"], self.task_id)
        run_id = self.trigger_run_id
        try:
            run = trigger_dag(
                self.trigger_dag_id,
                conf=self.conf,
                run_id=run_id,
                logical_date=logical_date,
                actor=f"{context['dag_id']}.{self.task_id}",
                triggered_by=triggered_by,
            )
            run_id = run.run_id
        except FlowschedError as exc:
            if run_id is None or "already has a run" not in str(exc):
                raise
            if not self.reset_dag_run:
                raise DagRunAlreadyExists(
                    f"DAG '{self.trigger_dag_id}' already has run '{run_id}': "
                    "set reset_dag_run=True to clear and run it again"
                ) from None
            log.info("clearing run %s of %s (reset_dag_run)", run_id, self.trigger_dag_id)
            clear_tasks(self.trigger_dag_id, run_id=run_id, actor=f"{context['dag_id']}")
        ti = context["ti"]
        ti.xcom_push(XCOM_RUN_ID, run_id)
        ti.xcom_push(XCOM_LOGICAL_DATE, logical_date.isoformat())
        log.info("triggered %s run %s", self.trigger_dag_id, run_id)
        if self.wait_for_completion:
            self._wait(run_id)

    def _wait(self, run_id: str) -> None:
        while True:
            time.sleep(self.poke_interval)
            with session_scope(read_only=True) as session:
                state = session.scalar(
                    select(DagRun.state).where(
                        DagRun.dag_id == self.trigger_dag_id, DagRun.run_id == run_id
                    )
                )
            log.info("waiting for %s run %s: %s", self.trigger_dag_id, run_id, state)
            if state in self.failed_states:
                raise TriggeredRunFailed(f"{self.trigger_dag_id} run {run_id} ended {state}")
            if state in self.allowed_states:
                return
