"""Sensors and cross-DAG operators end to end, through a real scheduler and task processes.

Each runs on SQLite and on MariaDB (the ``home`` fixture). The states asserted
are the ones Airflow gives the same DAG.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import select, update

from flowsched import operations
from flowsched.db.engine import session_scope
from flowsched.db.models import DagRun, TaskInstance, TaskReschedule
from flowsched.exceptions import DagDefinitionError
from flowsched.lifecycle import queue_try, reschedule_try
from flowsched.state import TaskState
from flowsched.timezone import utcnow
from flowsched.xcom import pull_xcom
from tests.harness import drive, parse, run_finished, run_state, ti_states, tries


def states_of(dag_id: str) -> dict[str, str]:
    return {task: state for task, (state, _) in ti_states(dag_id).items()}


def reschedules(dag_id: str, task_id: str) -> list[tuple[int, object]]:
    with session_scope(read_only=True) as session:
        return [
            (row.try_number, row.reschedule_date)
            for row in session.scalars(
                select(TaskReschedule)
                .where(TaskReschedule.dag_id == dag_id, TaskReschedule.task_id == task_id)
                .order_by(TaskReschedule.id)
            )
        ]


RESCHEDULE = """
from datetime import datetime
from flowsched import DAG, BashOperator, FileSensor

with DAG("resched", start_date=datetime(2026, 1, 1)) as dag:
    FileSensor(task_id="wait", filepath="{flag}", mode="reschedule", poke_interval=0.3,
               timeout=120, retries=0, priority_weight=10, pool="single")
    BashOperator(task_id="maker", bash_command="touch {flag}", pool="single")
"""


def test_reschedule_sensor_frees_its_slot_and_keeps_its_try(home, tmp_path):
    """With one worker slot and a one-slot pool, the sensor waits for a file that only the
    other task makes: in poke mode that never ends; in reschedule mode the sensor gives
    both slots back between pokes."""
    operations.set_pool("single", 1)
    flag = tmp_path / "flag"
    home.write_dag("resched.py", RESCHEDULE.replace("{flag}", str(flag)))
    parse()
    operations.trigger_dag("resched")
    drive(run_finished("resched"), timeout=90, parallelism=1)
    assert run_state("resched") == "success"
    assert ti_states("resched") == {"wait": ("success", 1), "maker": ("success", 1)}
    pokes = reschedules("resched", "wait")
    assert pokes, "the sensor never rescheduled: it cannot have freed its slot"
    assert {try_number for try_number, _ in pokes} == {1}  # no retry spent
    history = tries("resched", "wait")
    assert [(t.try_number, t.state) for t in history] == [(1, "success")]


TIMEOUTS = """
from datetime import datetime
from flowsched import DAG, PythonSensor

with DAG("timeouts", start_date=datetime(2026, 1, 1)) as dag:
    PythonSensor(task_id="hard", python_callable=lambda: False, mode="reschedule",
                 poke_interval=0.3, timeout=1, retries=2)
    PythonSensor(task_id="soft", python_callable=lambda: False, mode="reschedule",
                 poke_interval=0.3, timeout=1, soft_fail=True, retries=2)
    PythonSensor(task_id="poking", python_callable=lambda: False, mode="poke",
                 poke_interval=0.2, timeout=0.5, retries=1)
"""


def test_sensor_timeout_counts_from_first_poke_fails_without_retry_or_skips(home):
    home.write_dag("timeouts.py", TIMEOUTS)
    parse()
    operations.trigger_dag("timeouts")
    drive(run_finished("timeouts"), timeout=90)
    # The timeout counts across reschedules (from the first poke), and fails outright.
    assert ti_states("timeouts") == {
        "hard": ("failed", 1),
        "soft": ("skipped", 1),
        "poking": ("failed", 1),
    }
    # It timed out in a later poke than its first: each poke lasts milliseconds, so only
    # a timeout counted from the first poke (task_reschedule) can have ended it.
    assert len(reschedules("timeouts", "hard")) >= 1
    assert "timed out" in (tries("timeouts", "hard")[0].error or "")
    assert "timed out" in (tries("timeouts", "soft")[0].error or "")


BUILT_INS = """
from datetime import datetime, timedelta
from flowsched import (DAG, BashSensor, DateTimeSensor, PokeReturnValue, PythonOperator,
                       TimeDeltaSensor, task)

calls = {{"n": 0}}

with DAG("builtins", start_date=datetime(2026, 1, 1)) as dag:
    @task.sensor(poke_interval=0.1, timeout=30, mode="poke")
    def counted():
        calls["n"] += 1
        return PokeReturnValue(is_done=calls["n"] >= 3, xcom_value={{"pokes": calls["n"]}})

    DateTimeSensor(task_id="past", target_time="{{{{ data_interval_end }}}}", poke_interval=0.1)
    TimeDeltaSensor(task_id="delta", delta=timedelta(0), poke_interval=0.1)
    BashSensor(task_id="bash_ok", bash_command="test -e {path}", poke_interval=0.1, timeout=30)
    BashSensor(task_id="bash_error", bash_command="exit 2", retry_exit_code=1,
               poke_interval=0.1, timeout=30)
    counted()
"""


def test_built_in_sensors(home, tmp_path):
    home.write_dag("builtins.py", BUILT_INS.format(path=tmp_path))
    parse()
    run = operations.trigger_dag("builtins")
    drive(run_finished("builtins"), timeout=90)
    assert states_of("builtins") == {
        "counted": "success",
        "past": "success",
        "delta": "success",
        "bash_ok": "success",
        "bash_error": "failed",
    }
    with session_scope(read_only=True) as session:
        assert pull_xcom(session, "builtins", run.run_id, "counted", "return_value") == {"pokes": 3}
    assert "exited with 2" in (tries("builtins", "bash_error")[0].error or "")


CROSS = """
from datetime import datetime
from flowsched import DAG, BashOperator, ExternalTaskSensor, TriggerDagRunOperator

with DAG("child", start_date=datetime(2026, 1, 1), schedule=None) as child:
    BashOperator(task_id="work", bash_command="test $(echo '{{ dag_run.conf.x }}') = 7")

with DAG("broken", start_date=datetime(2026, 1, 1), schedule=None) as broken:
    BashOperator(task_id="work", bash_command="exit 1")

with DAG("parent", start_date=datetime(2026, 1, 1), schedule=None) as parent:
    TriggerDagRunOperator(task_id="trigger", trigger_dag_id="child",
                          trigger_run_id="for_{{ run_id }}", conf={"x": 7},
                          logical_date="{{ logical_date }}",
                          wait_for_completion=True, poke_interval=0.3)
    ExternalTaskSensor(task_id="watch_task", external_dag_id="child",
                       external_task_id="work", mode="reschedule", poke_interval=0.3,
                       timeout=120, check_existence=True)
    ExternalTaskSensor(task_id="watch_run", external_dag_id="child", poke_interval=0.3,
                       timeout=120)
    TriggerDagRunOperator(task_id="trigger_broken", trigger_dag_id="broken",
                          trigger_run_id="b_{{ run_id }}", logical_date="{{ logical_date }}")
    ExternalTaskSensor(task_id="watch_broken", external_dag_id="broken",
                       external_task_ids=["work"], failed_states=["failed"],
                       poke_interval=0.3, timeout=120, retries=0)
"""


def test_trigger_dag_run_and_external_task_sensor(home):
    home.write_dag("cross.py", CROSS)
    parse()
    run = operations.trigger_dag("parent")
    drive(run_finished("parent"), timeout=120)
    assert states_of("parent") == {
        "trigger": "success",
        "watch_task": "success",
        "watch_run": "success",
        "trigger_broken": "success",
        "watch_broken": "failed",
    }
    child_run_id = f"for_{run.run_id}"
    with session_scope(read_only=True) as session:
        child = session.scalar(select(DagRun).where(DagRun.run_id == child_run_id))
        assert child is not None and child.dag_id == "child"
        assert child.state == "success"
        assert child.conf == {"x": 7}
        assert child.logical_date == run.logical_date  # the sensor found it by this date
        triggered_by = (child.triggered_by_dag_id, child.triggered_by_run_id)
        assert triggered_by == ("parent", run.run_id)
        assert child.triggered_by_task_id == "trigger"
        pushed = pull_xcom(session, "parent", run.run_id, "trigger", "trigger_run_id")
        assert pushed == child_run_id
    assert "broken" in (tries("parent", "watch_broken")[0].error or "")
    # Triggering the same run id again fails unless reset_dag_run clears it.
    operations.clear_tasks("parent", task_regex="^trigger$", run_id=run.run_id)
    drive(run_finished("parent"), timeout=60)
    assert states_of("parent")["trigger"] == "failed"
    assert "reset_dag_run" in (tries("parent", "trigger")[-1].error or "")


def test_reschedule_transitions_are_guarded(home):
    """Only a running try can be rescheduled; only a due one goes back to queued."""
    home.write_dag("resched.py", RESCHEDULE.replace("{flag}", "/nonexistent/flag"))
    parse()
    run = operations.trigger_dag("resched")
    with session_scope() as session:
        ti = session.scalar(
            select(TaskInstance).where(
                TaskInstance.run_id == run.run_id, TaskInstance.task_id == "wait"
            )
        )
        later = utcnow() + timedelta(hours=1)
        assert reschedule_try(session, ti.id, 0, reschedule_date=later) is None  # not running
        ti.state = TaskState.RUNNING.value
        ti.try_number = 1
        session.flush()
        assert reschedule_try(session, ti.id, 2, reschedule_date=later) is None  # wrong try
        state = reschedule_try(session, ti.id, 1, reschedule_date=later)
        assert state is TaskState.UP_FOR_RESCHEDULE
        session.refresh(ti)
        args = dict(fingerprint="x", dag_version_id=None, fileloc="f", queue="q", job_id=None)
        assert queue_try(session, ti, now=utcnow(), **args) is None  # not due yet
        workload = queue_try(session, ti, now=later, **args)
        assert workload is not None and workload.try_number == 1  # same try, no retry spent
        session.refresh(ti)
        assert (ti.state, ti.try_number) == ("queued", 1)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"mode": "sometimes"}, "mode must be one of poke, reschedule"),
        ({"poke_interval": -1}, "poke_interval must not be negative"),
        ({"timeout": "soon"}, "timeout must be a timedelta or seconds"),
    ],
)
def test_bad_sensor_arguments_name_what_is_wrong(kwargs, message):
    from flowsched import DAG, PythonSensor

    with DAG("bad", schedule=None), pytest.raises(DagDefinitionError, match=message):
        PythonSensor(task_id="s", python_callable=lambda: True, **kwargs)


def test_example_sensors_dag(home):
    import shutil
    from pathlib import Path

    import flowsched

    example = Path(flowsched.__file__).parent / "example_dags" / "example_sensors.py"
    shutil.copy(example, home.dags / example.name)
    parse()
    run = operations.trigger_dag("example_sensors")
    downstream = f"from_{run.run_id}"
    drive(run_finished("example_sensors_downstream", downstream), timeout=120, parallelism=2)
    assert set(states_of_run("example_sensors", run.run_id).values()) == {"success"}
    assert states_of_run("example_sensors_downstream", downstream) == {
        "wait_for_process": "success",
        "report": "success",
    }
    assert reschedules("example_sensors", "wait_for_file")  # it did wait in reschedule mode


def states_of_run(dag_id: str, run_id: str) -> dict[str, str]:
    return {task: state for task, (state, _) in ti_states(dag_id, run_id).items()}


YIELDING = """
from datetime import datetime
from flowsched import DAG, BashOperator, PythonSensor

with DAG("yielding", start_date=datetime(2026, 1, 1), schedule=None) as dag:
    for n in range(3):
        PythonSensor(task_id=f"s{n}", python_callable=lambda: False, mode="reschedule")
    BashOperator(task_id="other", bash_command="true")
"""


def test_due_pokes_yield_to_a_backlog(home):
    """Due sensor pokes are queued only while fewer than max_queued_reschedules tries
    wait unstarted; fresh tasks are not held back by them."""
    from flowsched.executors.local import LocalExecutor
    from flowsched.scheduler.loop import Scheduler

    home.configure(scheduler={"max_queued_reschedules": "1"})
    home.write_dag("yielding.py", YIELDING)
    parse()
    run = operations.trigger_dag("yielding")
    scheduler = Scheduler(LocalExecutor(4), run_dag_processor=False)
    assert scheduler.start_queued_runs() == 1
    past = utcnow() - timedelta(seconds=1)
    with session_scope() as session:
        session.execute(
            update(TaskInstance)
            .where(TaskInstance.dag_run_id == run.id, TaskInstance.task_id.like("s%"))
            .values(state="up_for_reschedule", try_number=1, next_retry_at=past)
        )
        session.execute(
            update(TaskInstance)
            .where(TaskInstance.dag_run_id == run.id, TaskInstance.task_id == "other")
            .values(state="queued", try_number=1)
        )
    assert scheduler.schedule_runs() == []  # one try waits unstarted: the pokes wait
    with session_scope() as session:
        session.execute(
            update(TaskInstance)
            .where(TaskInstance.dag_run_id == run.id, TaskInstance.task_id == "other")
            .values(state="success")
        )
    workloads = scheduler.schedule_runs()
    assert [(w.task_id, w.try_number) for w in workloads] == [("s0", 1)]  # same try
    assert states_of("yielding") == {
        "s0": "queued",
        "s1": "up_for_reschedule",
        "s2": "up_for_reschedule",
        "other": "success",
    }


def test_foreground_run_of_a_reschedule_sensor(sqlite_home):
    from tests.test_cli import flowsched

    sqlite_home.write_dag("resched.py", RESCHEDULE.replace("{flag}", "/nonexistent/flag"))
    parse()
    operations.set_pool("single", 1)
    run = operations.trigger_dag("resched")
    result = flowsched(sqlite_home, "tasks", "run", "resched", "wait", run.run_id)
    assert "resched.wait try 1: up_for_reschedule" in result.stdout
    assert ti_states("resched", run.run_id)["wait"] == ("up_for_reschedule", 1)
    assert len(reschedules("resched", "wait")) == 1
