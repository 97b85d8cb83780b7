"""Callbacks (Airflow's on_*_callback) with real task processes and the real callback
runner, on SQLite and on MariaDB: where each runs, what it is given, and that one
that raises or hangs is logged and abandoned without changing any state."""

from __future__ import annotations

import json
import os
from datetime import timedelta
from pathlib import Path

from sqlalchemy import func, select, update

from flowsched import operations
from flowsched.callback_runner import run_pending_callbacks
from flowsched.db.engine import session_scope
from flowsched.db.models import CallbackRequest, DagRun, TaskInstance
from flowsched.task_logs.files import relative_log_path
from flowsched.timezone import utcnow
from tests.harness import drive, parse, run_finished, run_state, ti_states

RECORDER = """
import json, os
from datetime import datetime, timedelta
from sqlalchemy import select
from flowsched import DAG, AirflowSkipException, PythonOperator
from flowsched.db.engine import session_scope
from flowsched.db.models import TaskInstance

OUT = "OUT_PATH"
KEYS = ("ti", "task_instance", "dag_run", "task", "dag", "ds", "logical_date",
        "exception", "reason", "params", "run_id")

def record(name):
    def callback(context):
        ti = context["ti"]
        db_state = None
        if ti is not None:
            with session_scope() as session:
                db_state = session.scalar(
                    select(TaskInstance.state).where(TaskInstance.id == ti.ti_id))
        with open(OUT, "a") as out:
            out.write(json.dumps({
                "callback": name,
                "dag_id": context["dag"].dag_id,
                "task_id": ti.task_id if ti is not None else None,
                "try_number": ti.try_number if ti is not None else None,
                "ti_state": getattr(ti, "state", None),
                "db_state": db_state,
                "run_state": context["dag_run"].state,
                "pid": os.getpid(),
                "exception": repr(context.get("exception")),
                "reason": context.get("reason"),
                "ds": context["ds"],
                "keys": sorted(k for k in KEYS if k in context),
            }) + "\\n")
    callback.__name__ = name
    return callback

def fail():
    raise ValueError("boom")
"""

TASK_CALLBACKS = (
    RECORDER
    + """
def skip():
    raise AirflowSkipException("not today")

default_args = {name: record(name) for name in (
    "on_execute_callback", "on_success_callback", "on_failure_callback",
    "on_retry_callback", "on_skipped_callback")}

with DAG("cb_tasks", start_date=datetime(2026, 1, 1), default_args=default_args) as dag:
    PythonOperator(task_id="ok", python_callable=lambda: 1)
    PythonOperator(task_id="flaky", python_callable=fail, retries=1, retry_delay=2)
    PythonOperator(task_id="skipper", python_callable=skip)
    PythonOperator(task_id="listed", python_callable=lambda: 1,
                   on_success_callback=[record("first"), record("second")])
"""
)


def records(path: Path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines()]


def callback_requests() -> list[tuple[str, str, str | None]]:
    with session_scope() as session:
        return sorted(
            session.execute(
                select(
                    CallbackRequest.callback_type, CallbackRequest.dag_id, CallbackRequest.task_id
                )
            ).all()
        )


def test_task_callbacks_run_in_the_try_process_after_its_state_is_recorded(home):
    out = home.root / "callbacks.jsonl"
    home.write_dag("cb_tasks.py", TASK_CALLBACKS.replace("OUT_PATH", str(out)))
    parse()
    operations.trigger_dag("cb_tasks")
    drive(run_finished("cb_tasks"), timeout=60)
    assert {task: state for task, (state, _) in ti_states("cb_tasks").items()} == {
        "ok": "success",
        "flaky": "failed",
        "skipper": "skipped",
        "listed": "success",
    }
    seen = records(out)
    by_task = {}
    for entry in seen:
        by_task.setdefault(entry["task_id"], []).append(
            (entry["callback"], entry["try_number"], entry["db_state"])
        )
    # Each after-callback saw its state already recorded in the database.
    assert by_task["ok"] == [
        ("on_execute_callback", 1, "running"),
        ("on_success_callback", 1, "success"),
    ]
    assert by_task["flaky"] == [
        ("on_execute_callback", 1, "running"),
        ("on_retry_callback", 1, "up_for_retry"),
        ("on_execute_callback", 2, "running"),
        ("on_failure_callback", 2, "failed"),
    ]
    assert by_task["skipper"] == [
        ("on_execute_callback", 1, "running"),
        ("on_skipped_callback", 1, "skipped"),
    ]
    assert [name for name, _, _ in by_task["listed"]] == ["on_execute_callback", "first", "second"]
    failure = next(e for e in seen if e["callback"] == "on_failure_callback")
    assert failure["exception"] == "ValueError('boom')"
    assert failure["ti_state"] == "failed" and failure["reason"]
    assert set(failure["keys"]) >= {"ti", "task_instance", "dag_run", "task", "dag", "ds"}
    assert {"exception", "reason", "logical_date"} <= set(failure["keys"])
    # Never in this (the scheduler's) process; nothing left for the callback runner.
    assert os.getpid() not in {entry["pid"] for entry in seen}
    assert callback_requests() == []


DAG_CALLBACKS = (
    RECORDER
    + """
with DAG("cb_fail", start_date=datetime(2026, 1, 1),
         on_failure_callback=record("dag_on_failure"),
         on_success_callback=record("dag_on_success")) as failing:
    PythonOperator(task_id="boom", python_callable=fail)
    PythonOperator(task_id="fine", python_callable=lambda: 1)

with DAG("cb_ok", start_date=datetime(2026, 1, 1),
         on_success_callback=[record("dag_on_success")]) as fine:
    PythonOperator(task_id="fine", python_callable=lambda: 1)
"""
)


def test_run_callbacks_are_requested_with_the_transition_and_run_by_the_callback_runner(home):
    out = home.root / "callbacks.jsonl"
    home.write_dag("cb_dags.py", DAG_CALLBACKS.replace("OUT_PATH", str(out)))
    parse()
    operations.trigger_dag("cb_fail")
    operations.trigger_dag("cb_ok")
    drive(lambda: run_finished("cb_fail")() and run_finished("cb_ok")(), timeout=60)
    assert run_state("cb_fail") == "failed" and run_state("cb_ok") == "success"
    # The scheduler ran none of them: it wrote requests, with the runs' end.
    assert records(out) == []
    assert callback_requests() == [("dag_failure", "cb_fail", None), ("dag_success", "cb_ok", None)]

    assert run_pending_callbacks() == 2
    seen = {entry["dag_id"]: entry for entry in records(out)}
    assert seen["cb_fail"]["callback"] == "dag_on_failure"
    assert seen["cb_fail"]["reason"] == "task_failure"
    assert seen["cb_fail"]["task_id"] == "boom" and seen["cb_fail"]["ti_state"] == "failed"
    assert seen["cb_fail"]["run_state"] == "failed"
    assert seen["cb_ok"]["callback"] == "dag_on_success" and seen["cb_ok"]["reason"] == "success"
    assert os.getpid() not in {entry["pid"] for entry in seen.values()}
    assert callback_requests() == []
    assert run_pending_callbacks() == 0  # each request runs once


ZOMBIE = (
    RECORDER
    + """
with DAG("cb_zombie", start_date=datetime(2026, 1, 1)) as dag:
    PythonOperator(task_id="lost", python_callable=lambda: 1,
                   on_failure_callback=record("task_on_failure"))
"""
)


def test_a_zombie_failure_runs_the_task_failure_callback_in_the_callback_runner(home):
    out = home.root / "callbacks.jsonl"
    home.configure(scheduler={"max_lost_tries": "0"})
    home.write_dag("cb_zombie.py", ZOMBIE.replace("OUT_PATH", str(out)))
    parse()
    operations.trigger_dag("cb_zombie")
    with session_scope() as session:
        # A try whose worker vanished: running, silent for 10 minutes, no retries left.
        ti = session.scalar(select(TaskInstance).where(TaskInstance.dag_id == "cb_zombie"))
        ti.state, ti.try_number, ti.max_tries = "running", 1, 0
        ti.last_heartbeat = ti.start_date = utcnow() - timedelta(minutes=10)
        session.execute(update(DagRun).values(state="running"))
    drive(run_finished("cb_zombie"), timeout=60)
    assert ti_states("cb_zombie")["lost"] == ("failed", 1)
    assert callback_requests() == [("task_failure", "cb_zombie", "lost")]
    assert records(out) == []
    assert run_pending_callbacks() == 1
    (entry,) = records(out)
    assert entry["callback"] == "task_on_failure" and entry["db_state"] == "failed"
    assert "zombie" in entry["exception"]


MISBEHAVING = (
    RECORDER
    + """
import time

def explode(context):
    raise RuntimeError("callback exploded")

def hang(context):
    time.sleep(600)

with DAG("cb_bad", start_date=datetime(2026, 1, 1), on_failure_callback=[hang]) as dag:
    PythonOperator(task_id="raises", python_callable=lambda: 1,
                   on_success_callback=[explode, record("after_explode")])
    PythonOperator(task_id="hangs", python_callable=lambda: 1,
                   on_success_callback=[hang, record("after_hang")])
    PythonOperator(task_id="fails", python_callable=fail)
"""
)


def test_a_callback_that_raises_or_hangs_is_logged_and_timed_out_without_changing_state(
    sqlite_home, capfd
):
    home = sqlite_home
    out = home.root / "callbacks.jsonl"
    home.configure(alerts={"callback_timeout": "2"})
    home.write_dag("cb_bad.py", MISBEHAVING.replace("OUT_PATH", str(out)))
    parse()
    run = operations.trigger_dag("cb_bad")
    drive(run_finished("cb_bad"), timeout=90)
    states = {task: state for task, (state, _) in ti_states("cb_bad").items()}
    assert states == {"raises": "success", "hangs": "success", "fails": "failed"}
    # Later callbacks of the same list still ran.
    assert sorted(e["callback"] for e in records(out)) == ["after_explode", "after_hang"]

    def task_log(task_id: str) -> str:
        return (home.logs / relative_log_path("cb_bad", run.run_id, task_id, 1)).read_text()

    assert "callback exploded" in task_log("raises") and "Traceback" in task_log("raises")
    assert "timed out after 2 s" in task_log("hangs")

    capfd.readouterr()
    assert run_pending_callbacks() == 1
    assert "on_failure_callback hang timed out after 2 s" in capfd.readouterr().err
    assert run_state("cb_bad") == "failed"
    with session_scope() as session:
        assert session.scalar(select(func.count()).select_from(CallbackRequest)) == 0


TIMED_OUT = (
    RECORDER
    + """
with DAG("cb_timeout", start_date=datetime(2026, 1, 1), dagrun_timeout=timedelta(seconds=2),
         on_failure_callback=record("dag_on_failure")) as dag:
    PythonOperator(task_id="slow", python_callable=lambda: __import__("time").sleep(60),
                   on_failure_callback=record("task_on_failure"))
"""
)


def test_a_run_past_its_dagrun_timeout_calls_the_dag_failure_callback_with_timed_out(
    sqlite_home,
):
    out = sqlite_home.root / "callbacks.jsonl"
    sqlite_home.write_dag("cb_timeout.py", TIMED_OUT.replace("OUT_PATH", str(out)))
    parse()
    operations.trigger_dag("cb_timeout")
    drive(run_finished("cb_timeout"), timeout=60)
    assert run_state("cb_timeout") == "failed"
    assert callback_requests() == [("dag_failure", "cb_timeout", None)]
    assert run_pending_callbacks() == 1
    (entry,) = records(out)  # the stopped task was skipped, not failed: no task callback
    assert entry["callback"] == "dag_on_failure" and entry["reason"] == "timed_out"


STUCK = (
    RECORDER
    + """
import signal, time

def stuck(context):
    signal.signal(signal.SIGALRM, signal.SIG_IGN)  # deaf to the per-callback deadline
    time.sleep(600)

with DAG("cb_stuck", start_date=datetime(2026, 1, 1), on_failure_callback=stuck) as dag:
    PythonOperator(task_id="boom", python_callable=fail)
"""
)


def test_a_callback_deaf_to_its_deadline_is_killed_with_its_request_process(sqlite_home, caplog):
    home = sqlite_home
    home.configure(alerts={"callback_timeout": "1"}, core={"dagbag_import_timeout": "2"})
    home.write_dag("cb_stuck.py", STUCK.replace("OUT_PATH", str(home.root / "unused")))
    parse()
    operations.trigger_dag("cb_stuck")
    drive(run_finished("cb_stuck"), timeout=60)
    assert run_pending_callbacks() == 1  # returns: the process was killed at 2 + 4 x 1 s
    assert "still running after 6 s; killed" in caplog.text
    assert run_state("cb_stuck") == "failed" and callback_requests() == []


def test_an_empty_operator_with_callbacks_goes_to_a_worker(sqlite_home):
    from flowsched import DAG, EmptyOperator

    with DAG("cb_empty") as dag:
        EmptyOperator(task_id="plain")
        EmptyOperator(task_id="told", on_success_callback=print)
    tasks = {task["task_id"]: task for task in dag.to_dict()["tasks"]}
    assert tasks["plain"]["is_empty"] is True
    assert tasks["told"]["is_empty"] is False
    assert dag.to_dict()["has_on_failure_callback"] is False
