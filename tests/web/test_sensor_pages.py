"""Sensors and cross-DAG runs in the web UI, the API and the CLI: the up_for_reschedule state is
shown (colour, legend, API enum) and a triggered run links back to its trigger."""

from __future__ import annotations

from sqlalchemy import update

from flowsched.dag_processor import process_folder
from flowsched.db.engine import session_scope
from flowsched.db.models import TaskInstance
from flowsched.operations import trigger_dag
from flowsched.timezone import utcnow
from tests.test_cli import flowsched
from tests.web.openapi_check import check

DAGS = """
from datetime import datetime
from flowsched import DAG, PythonSensor, TriggerDagRunOperator

with DAG("parent", schedule=None, start_date=datetime(2026, 1, 1)) as parent:
    TriggerDagRunOperator(task_id="trigger", trigger_dag_id="child")

with DAG("child", schedule=None, start_date=datetime(2026, 1, 1)) as child:
    PythonSensor(task_id="wait", python_callable=lambda: False, mode="reschedule")
"""


def test_reschedule_state_and_trigger_link(sqlite_home, sqlite_web):
    sqlite_home.write_dag("cross.py", DAGS)
    assert not process_folder().errors
    parent = trigger_dag("parent", run_id="manual__parent")
    child = trigger_dag(
        "child", run_id="manual__child", triggered_by=("parent", parent.run_id, "trigger")
    )
    with session_scope() as session:
        session.execute(
            update(TaskInstance)
            .where(TaskInstance.dag_run_id == child.id)
            .values(state="up_for_reschedule", try_number=1, next_retry_at=utcnow())
        )
    client = sqlite_web.client("viewer")
    page = client.get("/dags/child/runs/manual__child").text
    assert 'id="triggered-by"' in page
    assert 'href="/dags/parent/runs/manual__parent"' in page
    assert 'href="/dags/parent/runs/manual__parent/tasks/trigger"' in page
    assert 'class="badge s-up_for_reschedule"' in page
    task_page = client.get("/dags/child/runs/manual__child/tasks/wait").text
    assert "<dt>Next poke</dt>" in task_page and 'class="badge s-up_for_reschedule"' in task_page
    grid = client.get("/dags/child").text
    assert 'class="s-up_for_reschedule"' in grid and "up for reschedule" in grid
    assert "up for reschedule" in client.get("/dags/child/graph").text
    css = client.get("/static/flowsched.css").text
    assert "a.cell.s-up_for_reschedule" in css
    auth = sqlite_web.api("viewer")
    run = check(client.get("/api/v1/dags/child/runs/manual__child", headers=auth))
    assert run["triggered_by"] == {
        "dag_id": "parent",
        "run_id": "manual__parent",
        "task_id": "trigger",
    }
    assert (
        check(client.get("/api/v1/dags/parent/runs/manual__parent", headers=auth))["triggered_by"]
        is None
    )
    tis = check(client.get("/api/v1/dags/child/runs/manual__child/tasks", headers=auth))
    assert tis["task_instances"][0]["state"] == "up_for_reschedule"
    states = flowsched(sqlite_home, "tasks", "states", "child", "manual__child").stdout
    assert "up_for_reschedule" in states
