"""New DAGs start paused (``[core] dags_are_paused_at_creation``, true as in Airflow).

The test ``home`` sets the option false so other tests see DAGs scheduled at
once; these tests put the default back and check what it means.
"""

from __future__ import annotations

import time

from sqlalchemy import func, select

from flowsched import operations
from flowsched.config import OPTIONS
from flowsched.db.engine import session_scope
from flowsched.db.models import Dag, DagRun
from flowsched.executors.local import LocalExecutor
from flowsched.scheduler.loop import Scheduler
from tests.harness import drive, parse, run_finished

DAILY = """
from datetime import datetime
from flowsched import DAG, BashOperator

with DAG("{dag_id}", schedule="@daily", start_date=datetime(2025, 1, 1){extra}):
    BashOperator(task_id="t", bash_command="true")
"""


def use_default(home) -> None:
    del home.settings["core"]["dags_are_paused_at_creation"]
    home.configure()


def paused(dag_id: str) -> bool:
    with session_scope() as session:
        return session.get(Dag, dag_id).is_paused


def run_count(dag_id: str) -> int:
    with session_scope() as session:
        return session.scalar(select(func.count()).where(DagRun.dag_id == dag_id))


def scheduler_passes(seconds: float = 2.0) -> None:
    with Scheduler(LocalExecutor(2), run_dag_processor=False) as scheduler:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            scheduler.run_once()
            time.sleep(0.1)


def test_the_default_is_true_as_in_airflow():
    assert OPTIONS["core"]["dags_are_paused_at_creation"].default == "true"


def test_a_new_catchup_dag_is_paused_and_creates_no_runs_until_unpaused(home):
    use_default(home)
    home.write_dag("catchup.py", DAILY.format(dag_id="catchup", extra=", catchup=True"))
    parse()
    assert paused("catchup")
    scheduler_passes()
    assert run_count("catchup") == 0  # not hundreds of runs the moment the file appears
    operations.set_paused("catchup", False)
    drive(lambda: run_count("catchup") > 0)
    assert run_count("catchup") > 0


def test_is_paused_upon_creation_overrides_the_option_both_ways(home):
    use_default(home)
    home.write_dag(
        "eager.py",
        DAILY.format(
            dag_id="eager", extra=", catchup=True, is_paused_upon_creation=False, max_active_runs=1"
        ),
    )
    parse()
    assert not paused("eager")
    home.configure(core={"dags_are_paused_at_creation": "false"})
    home.write_dag("shy.py", DAILY.format(dag_id="shy", extra=", is_paused_upon_creation=True"))
    parse()
    assert paused("shy")


def test_a_known_dag_keeps_its_pause_state_when_parsed_again(home):
    use_default(home)
    home.write_dag("kept.py", DAILY.format(dag_id="kept", extra=", catchup=False"))
    parse()
    operations.set_paused("kept", False)
    home.write_dag("kept.py", DAILY.format(dag_id="kept", extra=", catchup=False, tags=['x']"))
    parse()
    assert not paused("kept")


def test_a_manual_run_of_a_paused_dag_waits_until_unpaused(home):
    use_default(home)
    home.write_dag("manual.py", DAILY.format(dag_id="manual", extra=", catchup=False"))
    parse()
    run = operations.trigger_dag("manual")
    scheduler_passes(1.5)
    with session_scope() as session:
        assert session.scalar(select(DagRun.state).where(DagRun.id == run.id)) == "queued"
    operations.set_paused("manual", False)
    drive(run_finished("manual", run.run_id))
