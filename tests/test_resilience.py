"""Several schedulers, killed schedulers, and clean stops: no task lost or run twice."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

from sqlalchemy import func, select

from flowsched import operations
from flowsched.db.engine import session_scope
from flowsched.db.models import DagRun, Job, TaskInstance, TaskTry
from tests.harness import parse, wait_for

FAN_OUT = """
from datetime import datetime
from flowsched import DAG, BashOperator
with DAG("fan", start_date=datetime(2026, 1, 1), max_active_runs=8) as dag:
    start = BashOperator(task_id="start", bash_command="true")
    for n in range({width}):
        start >> BashOperator(task_id=f"t{{n}}", bash_command="sleep {sleep}")
"""


def start_scheduler(home, log_name: str) -> subprocess.Popen:
    log = open(home.root / log_name, "wb")  # noqa: SIM115 - closed with the process
    return subprocess.Popen(
        [sys.executable, "-m", "flowsched", "scheduler", "--no-dag-processor"],
        env={**os.environ, **home.env},
        stdout=log,
        stderr=subprocess.STDOUT,
    )


def all_runs_done(count: int):
    def check() -> bool:
        with session_scope() as session:
            states = session.scalars(select(DagRun.state)).all()
        return len(states) == count and all(s in ("success", "failed") for s in states)

    return check


def assert_each_try_ran_once() -> None:
    with session_scope() as session:
        per_ti = session.execute(
            select(TaskTry.task_instance_id, TaskTry.try_number, func.count()).group_by(
                TaskTry.task_instance_id, TaskTry.try_number
            )
        ).all()
        assert per_ti and all(n == 1 for _, _, n in per_ti)
        tis = session.scalars(select(TaskInstance)).all()
        assert all(ti.state == "success" for ti in tis), [(t.task_id, t.state) for t in tis]
        # Each try was claimed by exactly one process.
        assert all(t.try_number == 1 for t in tis)


def test_two_schedulers_on_mariadb_never_queue_a_task_twice(mysql_home):
    mysql_home.configure(core={"parallelism": "3"})
    mysql_home.write_dag("fan.py", FAN_OUT.format(width=12, sleep=0.2))
    parse()
    for n in range(6):
        operations.trigger_dag("fan", run_id=f"r{n}")
    first = start_scheduler(mysql_home, "s1.log")
    second = start_scheduler(mysql_home, "s2.log")
    try:
        wait_for(all_runs_done(6), timeout=120)
    finally:
        for proc in (first, second):
            proc.send_signal(signal.SIGTERM)
        for proc in (first, second):
            assert proc.wait(60) == 0
    assert_each_try_ran_once()
    with session_scope() as session:
        schedulers = set(session.scalars(select(TaskInstance.queued_by_job_id)).all())
        jobs = session.scalars(select(Job).where(Job.job_type == "scheduler")).all()
    assert len(jobs) == 2 and all(job.state == "success" for job in jobs)
    assert schedulers <= {job.id for job in jobs}
    assert len(schedulers) == 2, "both schedulers should have queued work"


def test_second_scheduler_on_sqlite_refuses_with_the_reason(sqlite_home):
    first = start_scheduler(sqlite_home, "s1.log")
    try:

        def registered() -> bool:
            with session_scope() as session:
                return session.scalar(select(func.count()).select_from(Job)) == 1

        wait_for(registered, timeout=30)
        second = subprocess.run(
            [sys.executable, "-m", "flowsched", "scheduler", "--no-dag-processor"],
            env={**os.environ, **sqlite_home.env},
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert second.returncode == 1
        assert "another scheduler is running" in second.stderr
        assert "SQLite has no row locks" in second.stderr
    finally:
        first.send_signal(signal.SIGTERM)
        assert first.wait(60) == 0


def test_scheduler_killed_mid_loop_restarts_without_losing_or_doubling(home):
    home.write_dag("fan.py", FAN_OUT.format(width=8, sleep=1))
    parse()
    for n in range(3):
        operations.trigger_dag("fan", run_id=f"k{n}")
    victim = start_scheduler(home, "victim.log")

    def some_running() -> bool:
        with session_scope() as session:
            return (
                session.scalar(
                    select(func.count())
                    .select_from(TaskInstance)
                    .where(TaskInstance.state.in_(["running", "queued"]))
                )
                >= 3
            )

    wait_for(some_running, timeout=60)
    victim.kill()  # SIGKILL: no chance to clean up
    victim.wait()
    time.sleep(0.5)
    # A fresh scheduler must not wait for the dead one's heartbeat to expire.
    home.configure(scheduler={"zombie_threshold": "10"})
    survivor = start_scheduler(home, "survivor.log")
    try:
        wait_for(all_runs_done(3), timeout=120)
    finally:
        survivor.send_signal(signal.SIGTERM)
        survivor.wait(60)
    with session_scope() as session:
        tis = session.scalars(select(TaskInstance)).all()
        assert all(ti.state == "success" for ti in tis)
        overlapping = session.execute(
            select(TaskTry.task_instance_id, func.count())
            .where(TaskTry.state == "success")
            .group_by(TaskTry.task_instance_id)
        ).all()
    # Every task succeeded exactly once, whatever the crash interrupted.
    assert len(overlapping) == len(tis) and all(n == 1 for _, n in overlapping)


def test_sigterm_lets_running_tasks_finish(sqlite_home):
    sqlite_home.write_dag("fan.py", FAN_OUT.format(width=2, sleep=3))
    parse()
    operations.trigger_dag("fan", run_id="t1")
    proc = start_scheduler(sqlite_home, "stop.log")

    def sleeping() -> bool:
        with session_scope() as session:
            return (
                session.scalar(
                    select(func.count())
                    .select_from(TaskInstance)
                    .where(TaskInstance.task_id.like("t%"), TaskInstance.state == "running")
                )
                == 2
            )

    wait_for(sleeping, timeout=60)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(60) == 0
    with session_scope() as session:
        states = dict(session.execute(select(TaskInstance.task_id, TaskInstance.state)).all())
    assert states == {"start": "success", "t0": "success", "t1": "success"}
