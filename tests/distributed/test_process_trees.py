"""Celery workers: a killed try, or a killed worker, leaves no process behind.

Each check looks at /proc for real processes carrying a marker (a unique
``sleep`` duration) only the test's own commands use.
"""

from __future__ import annotations

import os
import signal

from tests.distributed.conftest import Cluster, descendants
from tests.harness import wait_for
from tests.test_process_trees import (
    alive,
    assert_all_gone,
    kill_leftovers,
    marker,
    with_marker,
)


def test_kill_9_of_a_try_kills_its_shell_before_the_retry_starts(cluster: Cluster) -> None:
    mark = marker()
    ledger = cluster.root / f"ledger-{mark}"
    cluster.write_dag(
        "celery_killed_try",
        "BashOperator(task_id='t', bash_command="
        f"'echo start {{{{ try_number }}}} >> {ledger}; "
        f'if pgrep -f "^sleep {mark}" > /dev/null; then echo overlap >> {ledger}; fi; '
        f"if [ {{{{ try_number }}}} = 1 ]; then sleep {mark}; fi; "
        f"echo end {{{{ try_number }}}} >> {ledger}')",
        retries=1,
    )
    run_id = cluster.trigger("celery_killed_try")
    ti = cluster.wait_state("celery_killed_try", run_id, "t", "running")
    wait_for(lambda: with_marker(f"sleep {mark}"), 30)
    os.kill(ti.pid, signal.SIGKILL)  # the try's Python process, as the OOM killer would
    try:
        assert cluster.wait_run("celery_killed_try", run_id) == "success"
        leftovers = with_marker(f"sleep {mark}")
    finally:
        kill_leftovers(with_marker(f"sleep {mark}"))
    assert leftovers == [], "try 1's `sleep` outlived its try"
    assert ledger.read_text().split("\n") == ["start 1", "start 2", "end 2", ""]
    first, second = cluster.tries("celery_killed_try", run_id, "t")
    assert first.error.startswith(
        f"task process was killed by SIGKILL on worker {ti.worker_nodename} "
        "before recording a result"
    )
    assert second.state == "success"


def test_kill_9_of_a_worker_takes_its_pool_and_tries_with_it(cluster: Cluster) -> None:
    mark = marker()
    cluster.write_dag(
        "celery_dead_worker",
        "BashOperator(task_id='t', bash_command="
        f"'if [ {{{{ try_number }}}} = 1 ]; then sleep {mark}; fi; echo done')",
    )
    run_id = cluster.trigger("celery_dead_worker")
    ti = cluster.wait_state("celery_dead_worker", run_id, "t", "running")
    wait_for(lambda: with_marker(f"sleep {mark}"), 30)
    worker = cluster.worker_named(ti.worker_nodename)
    below = descendants(worker.process.pid)
    assert len(below) >= 4  # pool processes, the try, its shell and sleep
    worker.process.kill()
    worker.process.wait(10)
    try:
        assert_all_gone(below)
        # The try knew (its parent-death signal): interrupted, retried elsewhere, no retry spent.
        assert cluster.wait_run("celery_dead_worker", run_id) == "success"
    finally:
        kill_leftovers(alive(below))
        cluster.replace(worker)
    first, second = cluster.tries("celery_dead_worker", run_id, "t")
    assert first.worker_nodename == worker.nodename and "will be retried" in first.error
    assert second.state == "success" and second.worker_nodename != worker.nodename
