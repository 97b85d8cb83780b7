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
            map_index=workload.map_index,
            key=key,
            value=value,
            created_at=utcnow(),
        )
    )


def pull_xcom(
    session: Session,
    dag_id: str,
    run_id: str,
    task_id: str,
    key: str,
    map_index: int | None = None,
) -> Any:
    """The value a task pushed; of a mapped task, every copy's value in map_index order
    (what Airflow's reduce step receives), or one copy's with ``map_index``."""
    query = (
        select(XCom.map_index, XCom.value)
        .where(
            XCom.dag_id == dag_id, XCom.run_id == run_id, XCom.task_id == task_id, XCom.key == key
        )
        .order_by(XCom.map_index)
    )
    if map_index is not None:
        query = query.where(XCom.map_index == map_index)
    rows = session.execute(query).all()
    if not rows:
        return None
    if map_index is None and rows[0][0] >= 0:
        return [value for _, value in rows]
    return rows[0][1]


class TaskInstanceContext:
    """``context["ti"]``: what a running task may ask about its own instance."""

    def __init__(
        self, dag_id: str, run_id: str, task_id: str, ti_id: int, map_index: int = -1
    ) -> None:
        self.dag_id = dag_id
        self.run_id = run_id
        self.task_id = task_id
        self.ti_id = ti_id
        self.map_index = map_index

    def xcom_pull(
        self,
        task_ids: str | list[str] | None = None,
        key: str = "return_value",
        map_indexes: int | None = None,
    ) -> Any:
        """As Airflow's: a mapped task's values come as a list in map_index order
        unless ``map_indexes`` names one copy."""
        ids = [self.task_id] if task_ids is None else task_ids
        with session_scope(read_only=True) as session:
            if isinstance(ids, str):
                return pull_xcom(session, self.dag_id, self.run_id, ids, key, map_indexes)
            return [
                pull_xcom(session, self.dag_id, self.run_id, one, key, map_indexes) for one in ids
            ]

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
            map_index=self.map_index,
        )
        with session_scope() as session:
            push_xcom(session, workload, key, value)
