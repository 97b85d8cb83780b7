"""Dynamic task mapping end to end: authoring, serialization, scheduler expansion, the
local executor's copies, the reduce step, errors, per-index retries and clears.

Semantics checked are Airflow 2.x's: map_index -1 for unmapped tasks, copies 0..n-1,
the cross product of several expand() arguments (last varies fastest), a dict mapped
as (key, value) pairs, a zero-length map skipping the task, and [core] max_map_length.
"""

from __future__ import annotations

import pytest
from sqlalchemy import select

from flowsched import operations
from flowsched.db.engine import session_scope
from flowsched.db.models import TaskInstance, TaskTry, XCom
from tests.harness import drive, parse, run_finished, run_state


def copies(dag_id: str, task_id: str) -> list[tuple[int, str, int]]:
    """(map_index, state, try_number) of a task's instances, in map_index order."""
    with session_scope() as session:
        return [
            (ti.map_index, ti.state, ti.try_number)
            for ti in session.scalars(
                select(TaskInstance)
                .where(TaskInstance.dag_id == dag_id, TaskInstance.task_id == task_id)
                .order_by(TaskInstance.map_index)
            )
        ]


def xcoms(dag_id: str, task_id: str) -> list[tuple[int, object]]:
    with session_scope() as session:
        return [
            (row.map_index, row.value)
            for row in session.scalars(
                select(XCom)
                .where(XCom.dag_id == dag_id, XCom.task_id == task_id, XCom.key == "return_value")
                .order_by(XCom.map_index)
            )
        ]


def errors(dag_id: str, task_id: str) -> list[str | None]:
    with session_scope() as session:
        return list(
            session.scalars(
                select(TaskTry.error)
                .where(TaskTry.dag_id == dag_id, TaskTry.task_id == task_id)
                .order_by(TaskTry.id)
            )
        )


TASKFLOW = """
from datetime import datetime
from flowsched import DAG, task

with DAG("taskflow_map", start_date=datetime(2026, 1, 1)) as dag:
    @task
    def make():
        return [1, 2, 3]

    @task
    def add(x, y):
        return x + y

    @task
    def total(values):
        return {"values": list(values), "sum": sum(values)}

    total(add.partial(y=10).expand(x=make()))
"""


def test_taskflow_expand_over_xcom_and_reduce_in_order(home):
    home.write_dag("taskflow_map.py", TASKFLOW)
    parse()
    operations.trigger_dag("taskflow_map")
    drive(run_finished("taskflow_map"))
    assert run_state("taskflow_map") == "success"
    assert copies("taskflow_map", "make") == [(-1, "success", 1)]
    assert copies("taskflow_map", "add") == [(0, "success", 1), (1, "success", 1), (2, "success", 1)]
    assert xcoms("taskflow_map", "add") == [(0, 11), (1, 12), (2, 13)]
    assert xcoms("taskflow_map", "total") == [(-1, {"values": [11, 12, 13], "sum": 36})]


def _debug(dag_id):
    with session_scope() as session:
        for t in session.scalars(select(TaskTry).where(TaskTry.dag_id == dag_id)):
            print(t.task_id, t.map_index, t.state, t.error)
