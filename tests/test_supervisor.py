"""The process side of a try (flowsched.supervisor), forked as an executor's pool does.

What a try costs the database and who may touch its row: the claim refuses a
duplicate before any task code, the supervisor heartbeats only a try that
outlives the interval, and a process that never claimed its try never ends it.
"""

from __future__ import annotations

import logging
import os
import re
import signal
import time
from pathlib import Path

import pytest

from flowsched.db.engine import session_scope
from flowsched.db.models import TaskInstance
from flowsched.executors.base import ExecutorEvent
from flowsched.executors.local import LocalExecutor
from flowsched.lifecycle import claim_try
from flowsched.operations import trigger_dag
from flowsched.supervisor import announce_results_to, fork_and_run, record_crash
from flowsched.task_logs.files import log_path
from flowsched.task_runner import foreground_workload
from flowsched.workloads import RECORDED
from tests.harness import parse

DAG_FILE = """
import time
from datetime import datetime
from flowsched import DAG, PythonOperator

with DAG("beats", schedule=None, start_date=datetime(2026, 1, 1)) as dag:
    PythonOperator(task_id="quick", python_callable=lambda: None)
    # Longer than task_heartbeat_interval (1 s in the tests' config).
    PythonOperator(task_id="slow", python_callable=lambda: time.sleep(2.5))
    PythonOperator(task_id="marker", python_callable=lambda: open({marker!r}, "w").close())
"""


def _setup(home) -> str:
    home.write_dag("beats.py", DAG_FILE.format(marker=str(home.root / "ran.marker")))
    parse()
    return trigger_dag("beats").run_id


def _row(ti_id: int) -> TaskInstance:
    with session_scope() as session:
        ti = session.get(TaskInstance, ti_id)
        session.expunge(ti)
        return ti


def test_only_a_try_that_outlives_the_interval_is_heartbeated(sqlite_home):
    run_id = _setup(sqlite_home)
    quick = foreground_workload("beats", "quick", run_id)
    assert fork_and_run(quick, nodename="n") == (0, True)
    ti = _row(quick.ti_id)
    assert ti.state == "success"
    assert ti.last_heartbeat == ti.start_date  # the claim's, and no heartbeat after it

    slow = foreground_workload("beats", "slow", run_id)
    assert fork_and_run(slow, nodename="n") == (0, True)
    ti = _row(slow.ti_id)
    assert ti.state == "success"
    assert ti.last_heartbeat > ti.start_date  # its supervisor heartbeated for it


def test_a_duplicate_message_never_runs_and_never_ends_the_try_it_names(sqlite_home):
    run_id = _setup(sqlite_home)
    workload = foreground_workload("beats", "marker", run_id)
    with session_scope() as session:  # another worker took it first
        assert claim_try(session, workload, hostname="h", nodename="other", pid=1) is not None
    # The worker's log, as the forked process writes it (it inherits the handler).
    worker_log = logging.getLogger("flowsched.worker")
    handler = logging.FileHandler(sqlite_home.root / "worker.log")
    worker_log.addHandler(handler)
    try:
        assert fork_and_run(workload, nodename="n") == (0, False)
    finally:
        worker_log.removeHandler(handler)
        handler.close()
    assert not (sqlite_home.root / "ran.marker").exists()
    logged = (sqlite_home.root / "worker.log").read_text()
    assert f"not running: stale message for {workload.describe()}" in logged
    # Had this process died before its claim, its crash is not the running try's.
    record_crash(workload, "n", 1, claimed=False)
    ti = _row(workload.ti_id)
    assert (ti.state, ti.worker_nodename) == ("running", "other")
    record_crash(workload, "n", 1)  # the process that claimed it did die: that ends it
    assert _row(workload.ti_id).state in ("up_for_retry", "failed")


def test_a_try_announces_its_recorded_result_and_a_refused_message_does_not(sqlite_home):
    # The LocalExecutor frees the slot and wakes the scheduler on this: a try's downstream
    # is decided once its result is committed, not once its process is reaped and reported.
    run_id = _setup(sqlite_home)
    read_end, write_end = os.pipe()
    os.set_blocking(read_end, False)
    announce_results_to(write_end)
    try:
        quick = foreground_workload("beats", "quick", run_id)
        assert fork_and_run(quick, nodename="n") == (0, True)
        assert os.read(read_end, 64) == RECORDED.pack(quick.ti_id, quick.try_number)
        assert _row(quick.ti_id).state == "success"  # committed before the key was sent
        # ... and its log complete: whoever is woken may read it at once.
        log = log_path("beats", run_id, "quick", quick.try_number).read_text()
        assert "finished: success" in log.splitlines()[-1]
        assert fork_and_run(quick, nodename="n") == (0, False)  # the same message again
        with pytest.raises(BlockingIOError):
            os.read(read_end, 16)
    finally:
        announce_results_to(None)
        os.close(read_end)
        os.close(write_end)


def test_an_idle_local_pool_process_ends_on_sigterm_whatever_its_parent_handles(sqlite_home):
    # Pool processes are forked from the scheduler: with its SIGTERM handler (wake the
    # loop) they swallowed the parent-death signal, and one re-entered by a second
    # SIGTERM deadlocked on the loop's Event, left running after its scheduler died.
    sigterm = 1 << (signal.SIGTERM - 1)

    def caught(pid: int) -> int:
        status = Path(f"/proc/{pid}/status").read_text()
        return int(re.search(r"SigCgt:\s*([0-9a-f]+)", status).group(1), 16) & sigterm

    previous = signal.signal(signal.SIGTERM, lambda *_: None)
    executor = LocalExecutor(parallelism=1)
    try:
        executor.start()
        process = executor._processes[0]
        deadline = time.monotonic() + 30
        while caught(process.pid) and time.monotonic() < deadline:
            time.sleep(0.05)  # the fork still runs the parent's handler until it resets it
        assert not caught(process.pid)
        os.kill(process.pid, signal.SIGTERM)
        process.join(10)
        assert process.exitcode == -signal.SIGTERM
    finally:
        signal.signal(signal.SIGTERM, previous)
        executor.end(grace=10)


def test_a_local_try_that_recorded_its_result_leaves_the_scheduler_nothing_to_check(
    sqlite_home,
):
    # Its pool process's report (exit code 0) would cost the scheduler a read of the try;
    # a refused message (nothing recorded) is still reported, as a crash would be.
    run_id = _setup(sqlite_home)
    quick = foreground_workload("beats", "quick", run_id)
    executor = LocalExecutor(parallelism=1)
    executor.start()
    try:
        executor.queue(quick)
        executor.queue(quick)  # the same message again, after it: refused, exit code 0
        events: list[ExecutorEvent] = []
        deadline = time.monotonic() + 30
        while not events and time.monotonic() < deadline:
            events += executor.sync()
            time.sleep(0.05)
        assert events == [ExecutorEvent(quick.ti_id, quick.try_number, 0)]
        assert _row(quick.ti_id).state == "success"
    finally:
        executor.end(grace=10)
