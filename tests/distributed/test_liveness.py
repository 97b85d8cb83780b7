"""Workers that die, stop, or never come: no try is lost, stuck, or run twice."""

from __future__ import annotations

import os
import signal
import time

from flowsched.celery.app import make_app
from tests.distributed.conftest import Cluster


def test_worker_killed_mid_task_is_a_zombie_and_the_run_still_succeeds(cluster: Cluster) -> None:
    cluster.write_dag(
        "killed", "BashOperator(task_id='slow', bash_command='sleep 3; echo slow-done')", retries=2
    )
    run_id = cluster.trigger("killed")
    ti = cluster.wait_state("killed", run_id, "slow", "running")
    victim = cluster.worker_named(ti.worker_nodename)

    # kill -9 of the worker and everything under it, tries included: a host that died.
    victim.kill_tree()
    assert cluster.wait_run("killed", run_id) == "success"

    first, *_, last = cluster.tries("killed", run_id, "slow")
    assert first.worker_nodename == victim.nodename
    assert first.state == "failed"
    assert "zombie: no heartbeat from " + victim.nodename in first.error
    assert last.state == "success"
    assert last.worker_nodename != victim.nodename
    cluster.replace(victim)


def test_sigterm_is_a_warm_shutdown_the_running_try_finishes(cluster: Cluster) -> None:
    cluster.write_dag(
        "warm", "BashOperator(task_id='work', bash_command='sleep 3; echo warm-done')"
    )
    run_id = cluster.trigger("warm")
    ti = cluster.wait_state("warm", run_id, "work", "running")
    worker = cluster.worker_named(ti.worker_nodename)

    started = time.monotonic()
    assert worker.terminate() == 0
    assert time.monotonic() - started >= 1.0  # it waited for the try
    ti = cluster.tis("warm", run_id)["work"]
    assert (ti.state, ti.try_number, ti.worker_nodename) == ("success", 1, worker.nodename)
    assert "worker: Warm shutdown (MainProcess)" in worker.text()
    log = worker.log_folder / f"dag_id=warm/run_id={run_id}/task_id=work/attempt=1.log"
    assert "warm-done" in log.read_text()
    cluster.replace(worker)


def test_after_the_grace_time_running_tries_are_interrupted_and_retried(cluster: Cluster) -> None:
    # Only try 1 is slow; retries=0, so a retry here proves the interruption used none up.
    cluster.write_dag(
        "grace",
        "BashOperator(task_id='long', queue='grace', "
        "bash_command='if [ {{ try_number }} = 1 ]; then sleep 60; fi; echo long-done')",
    )
    quick = cluster.start_worker(
        "grace", queues="grace", concurrency=1, env={"FLOWSCHED__WORKER__SHUTDOWN_GRACE": "2"}
    )
    run_id = cluster.trigger("grace")
    cluster.wait_state("grace", run_id, "long", "running")

    started = time.monotonic()
    assert quick.terminate(timeout=30) == 0
    assert time.monotonic() - started < 45  # within the grace, not the task's 60 s
    assert "shutdown grace of 2s is over: interrupting 1 running tries" in quick.text()

    app = make_app()
    app.control.add_consumer("grace", destination=[cluster.a.nodename], reply=True, timeout=5)
    try:
        assert cluster.wait_run("grace", run_id) == "success"
    finally:
        app.control.cancel_consumer("grace", destination=[cluster.a.nodename], reply=True)
    first, second = cluster.tries("grace", run_id, "long")
    assert first.worker_nodename == quick.nodename
    assert "will be retried" in first.error
    assert (second.state, second.worker_nodename) == ("success", cluster.a.nodename)


def test_a_try_no_worker_takes_fails_after_the_queued_timeout(cluster: Cluster) -> None:
    cluster.write_dag("orphan", "BashOperator(task_id='lost', queue='nobody', bash_command='true')")
    run_id = cluster.trigger("orphan")
    # Re-queued once as a lost message ([scheduler] max_lost_tries = 1), then failed.
    assert cluster.wait_run("orphan", run_id, timeout=90) == "failed"
    first, second = cluster.tries("orphan", run_id, "lost")
    assert first.state == second.state == "failed"
    assert "queued for over 12 s without starting" in first.error
    assert "re-queued without spending a retry (lost 1 of 1 allowed)" in first.error
    assert "queued for over 12 s without starting" in second.error
    assert "counted as a failure" in second.error
    assert first.worker_nodename is None and second.worker_nodename is None


def test_a_killed_try_process_is_recorded_by_its_worker_at_once_and_retried(
    cluster: Cluster,
) -> None:
    cluster.write_dag(
        "oom",
        "BashOperator(task_id='t', "
        "bash_command='sleep {{ 8 if try_number == 1 else 0 }}; echo oom-done')",
        retries=1,
    )
    run_id = cluster.trigger("oom")
    ti = cluster.wait_state("oom", run_id, "t", "running")
    os.kill(ti.pid, signal.SIGKILL)  # as the OOM killer would
    assert cluster.wait_run("oom", run_id) == "success"
    # Recorded by the pool process (its words below), not found later by the zombie sweep.
    first, second = cluster.tries("oom", run_id, "t")
    assert first.error.startswith(
        f"task process was killed by SIGKILL on worker {ti.worker_nodename} "
        "before recording a result"
    )
    assert second.state == "success"
