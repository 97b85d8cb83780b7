"""XCom: small JSON values passed from a task to its downstream tasks.

Values are JSON only (never pickles) and capped by ``core.max_xcom_size``;
anything larger belongs in real storage, with its path passed as the XCom.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from flowsched.config import get_config
from flowsched.db.engine import session_scope
from flowsched.db.models import XCom
from flowsched.exceptions import FlowschedError
from flowsched.timezone import utcnow

if TYPE_CHECKING:
    from flowsched.workloads import Workload


class XComError(FlowschedError):
    pass


def _encode(task_id: str, key: str, value: Any) -> None:
    try:
        text = json.dumps(value)
    except (TypeError, ValueError) as exc:
        raise XComError(
            f"task '{task_id}': XCom '{key}' is not JSON-serializable ({exc}); "
            "return plain data (dict, list, str, numbers)"
        ) from None
    limit = get_config().core.max_xcom_size
    if len(text.encode()) > limit:
        raise XComError(
            f"task '{task_id}': XCom '{key}' is {len(text.encode())} bytes, over the "
            f"{limit}-byte limit (core.max_xcom_size)"
        )


def push_xcom(session: Session, workload: Workload, key: str, value: Any) -> None:
    _encode(workload.task_id, key, value)
    session.execute(delete(XCom).where(XCom.task_instance_id == workload.ti_id, XCom.key == key))
    session.add(
        XCom(
            task_instance_id=workload.ti_id,
            dag_id=workload.dag_id,
            run_id=workload.run_id,
            task_id=workload.task_id,
            key=key,
            value=value,
            created_at=utcnow(),
        )
    )


def pull_xcom(session: Session, dag_id: str, run_id: str, task_id: str, key: str) -> Any:
    return session.scalar(
        select(XCom.value).where(
            XCom.dag_id == dag_id, XCom.run_id == run_id, XCom.task_id == task_id, XCom.key == key
        )
    )


class TaskInstanceContext:
    """``context["ti"]``: what a running task may ask about its own instance."""

    def __init__(self, dag_id: str, run_id: str, task_id: str, ti_id: int) -> None:
        self.dag_id = dag_id
        self.run_id = run_id
        self.task_id = task_id
        self.ti_id = ti_id

    def xcom_pull(self, task_ids: str | list[str] | None = None, key: str = "return_value") -> Any:
        ids = [self.task_id] if task_ids is None else task_ids
        with session_scope(read_only=True) as session:
            if isinstance(ids, str):
                return pull_xcom(session, self.dag_id, self.run_id, ids, key)
            return [pull_xcom(session, self.dag_id, self.run_id, one, key) for one in ids]

    def xcom_push(self, key: str, value: Any) -> None:
        from flowsched.workloads import Workload

        workload = Workload(
            ti_id=self.ti_id,
            dag_id=self.dag_id,
            task_id=self.task_id,
            run_id=self.run_id,
            try_number=0,
            fingerprint="",
            fileloc="",
            queue="",
        )
        with session_scope() as session:
            push_xcom(session, workload, key, value)
