"""XCom limits and DAG versions recorded on runs and tries."""

from __future__ import annotations

from sqlalchemy import select

from flowsched import operations
from flowsched.db.engine import session_scope
from flowsched.db.models import DagRun, DagVersion
from tests.harness import drive, parse, run_finished, ti_states, tries

BAD_XCOM = """
from datetime import datetime
from flowsched import DAG, task
with DAG("xc", start_date=datetime(2026, 1, 1)) as dag:
    @task
    def not_json():
        return object()

    @task
    def too_big():
        return "x" * 200_000

    @task
    def pushes(ti):
        ti.xcom_push("extra", {"n": 1})

    @task
    def pulls(ti):
        assert ti.xcom_pull("pushes", key="extra") == {"n": 1}

    not_json()
    too_big()
    pushes() >> pulls()
"""


def test_xcom_must_be_small_json(home):
    home.write_dag("xc.py", BAD_XCOM)
    parse()
    operations.trigger_dag("xc")
    drive(run_finished("xc"))
    states = {task: state for task, (state, _) in ti_states("xc").items()}
    assert states == {
        "not_json": "failed",
        "too_big": "failed",
        "pushes": "success",
        "pulls": "success",
    }
    assert "task 'not_json': XCom 'return_value' is not JSON-serializable" in (
        tries("xc", "not_json")[0].error
    )
    assert "over the 65536-byte limit (core.max_xcom_size)" in tries("xc", "too_big")[0].error


VERSIONED = """
from datetime import datetime
from flowsched import DAG, BashOperator
with DAG("versioned", start_date=datetime(2026, 1, 1)) as dag:
    BashOperator(task_id="a", bash_command="echo {word}")
"""


def test_runs_and_tries_record_the_version_they_ran(home):
    home.write_dag("versioned.py", VERSIONED.format(word="one"))
    parse()
    first = operations.trigger_dag("versioned", run_id="first")
    drive(run_finished("versioned", "first"))
    home.write_dag("versioned.py", VERSIONED.format(word="two"))
    parse()
    operations.trigger_dag("versioned", run_id="second")
    drive(run_finished("versioned", "second"))
    with session_scope() as session:
        versions = {v.version_number: v for v in session.scalars(select(DagVersion))}
        runs = {r.run_id: r for r in session.scalars(select(DagRun))}
    assert runs["first"].dag_version_id == versions[1].id
    assert runs["second"].dag_version_id == versions[2].id
    history = tries("versioned", "a")
    assert [t.fingerprint for t in history] == [versions[1].fingerprint, versions[2].fingerprint]
    log = home.logs / "dag_id=versioned" / f"run_id={first.run_id}" / "task_id=a"
    assert "one" in (log / "attempt=1.log").read_text()
