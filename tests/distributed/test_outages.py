"""Outages and dead workers on a real Celery cluster: weather, not death.

Each test builds a small cluster of its own (scheduler with its DAG processor,
workers) on a MariaDB and a Redis it may stop: the session's shared servers
must stay up for the other tests.
"""

from __future__ import annotations

import itertools
import os
import re
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import select

from flowsched.db.engine import reset_engine, session_scope
from flowsched.db.models import TaskInstance
from flowsched.timezone import utcnow
from tests.conftest import wait_until
from tests.distributed.conftest import Cluster, Proc, activate, descendants, make_cluster
from tests.servers import MariaDBServer, start_redis
from tests.test_outages import own_mariadb  # noqa: F401 - the module's own MariaDB

OUTAGE = 25.0

PARALLEL = """
import time
def slow_value():
    time.sleep(8)
    return 'kept'
ends = [BashOperator(task_id=f"t{n}", bash_command="sleep 8; echo done") for n in range(4)]
value = PythonOperator(task_id="value", python_callable=slow_value)
after = BashOperator(task_id="after", bash_command="echo after")
ends >> after
value >> after
"""


@pytest.fixture
def own_cluster(
    tmp_path_factory: pytest.TempPathFactory,
    own_mariadb: MariaDBServer,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[Cluster]:
    if own_mariadb.process.poll() is not None:  # a failed test left it stopped
        own_mariadb.start_again()
    root = tmp_path_factory.mktemp("outage-cluster")
    redis = start_redis(root / "redis")
    cluster = make_cluster(root, own_mariadb, redis)
    activate(cluster, monkeypatch)
    try:
        yield cluster
    finally:
        if own_mariadb.process.poll() is not None:
            own_mariadb.start_again()
        if redis.process.poll() is not None:
            redis.start_again()
        cluster.stop_all()
        redis.stop()
        reset_engine()


def configure(cluster: Cluster, **sections: dict[str, str]) -> None:
    """Change the cluster's config before its processes start."""
    cluster.home.configure(**sections)
    reset_engine()


def dag_processor_of(scheduler: Proc) -> int:
    (pid,) = [
        pid
        for pid in descendants(scheduler.process.pid)
        if b"dag-processor" in Path(f"/proc/{pid}/cmdline").read_bytes()
    ]
    return pid


def wait_for_count(
    cluster: Cluster, dag_id: str, run_id: str, state: str, count: int, timeout: float = 90
) -> None:
    """Wait until at least ``count`` tasks of the run are in ``state``."""

    def reached() -> bool:
        return sum(ti.state == state for ti in cluster.tis(dag_id, run_id).values()) >= count

    try:
        wait_until(reached, timeout=timeout, step=0.1)
    except AssertionError:
        states = {
            task_id: [
                (t.state, str(t.start_date), str(t.end_date), t.worker_nodename)
                for t in cluster.tries(dag_id, run_id, task_id)
            ]
            for task_id in cluster.tis(dag_id, run_id)
        }
        raise AssertionError(f"never {count} tasks {state}: {states}\n{cluster.report()}") from None


def lines(text: str, pattern: str) -> list[str]:
    return [line for line in text.splitlines() if re.search(pattern, line)]


def assert_ran_once_each(cluster: Cluster, dag_id: str, run_id: str) -> None:
    """Every task succeeded; one successful try each; no two tries overlapped."""
    for task_id, ti in cluster.tis(dag_id, run_id).items():
        assert ti.state == "success", (task_id, ti.state)
        tries = cluster.tries(dag_id, run_id, task_id)
        assert [t.state for t in tries].count("success") == 1, (task_id, tries)
        spans = sorted((t.start_date, t.end_date) for t in tries if t.start_date is not None)
        assert not any(b[0] < a[1] for a, b in itertools.pairwise(spans)), (task_id, spans)


def retries_spent(cluster: Cluster, dag_id: str, run_id: str) -> dict[str, int]:
    """Retries each task used up: tries beyond the first, less those lost for free."""
    with session_scope() as session:
        rows = session.execute(
            select(TaskInstance.task_id, TaskInstance.try_number, TaskInstance.lost_count).where(
                TaskInstance.dag_id == dag_id, TaskInstance.run_id == run_id
            )
        ).all()
    return {task_id: tries - 1 - lost for task_id, tries, lost in rows}


def test_a_mariadb_outage_under_celery_loses_no_result_and_reruns_nothing(
    own_cluster: Cluster,
    own_mariadb: MariaDBServer,  # noqa: F811
) -> None:
    cluster = own_cluster
    # Shorter than the outage; longer than a try waits for a slot after it on 2 busy cores.
    configure(cluster, scheduler={"task_queued_timeout": "20"})
    scheduler = cluster.start_scheduler()
    # Five tries on three slots: two wait in Redis, delivered during or after the outage.
    worker = cluster.start_worker("w", concurrency=3)
    cluster.write_dag("storm", PARALLEL)
    run_id = cluster.trigger("storm")
    wait_for_count(cluster, "storm", run_id, "running", 3)
    processor = dag_processor_of(scheduler)

    own_mariadb.stop()
    time.sleep(OUTAGE)  # zombie_threshold is 6 s, task_queued_timeout 20 s
    for proc in (scheduler, worker):
        assert proc.alive(), proc.text()[-3000:]
    assert os.path.exists(f"/proc/{processor}"), "the DAG processor died in the outage"
    own_mariadb.start_again()
    reset_engine()

    state = cluster.wait_run("storm", run_id, timeout=90)
    history = {
        task_id: [(t.state, t.error) for t in cluster.tries("storm", run_id, task_id)]
        for task_id in cluster.tis("storm", run_id)
    }
    assert state == "success", f"{history}\n{cluster.report()}"
    assert_ran_once_each(cluster, "storm", run_id)
    # retries=0 and try 1 everywhere: nothing was re-run or lost.
    history = {
        task_id: [(t.state, t.error) for t in cluster.tries("storm", run_id, task_id)]
        for task_id in cluster.tis("storm", run_id)
    }
    if not all(len(tries) == 1 for tries in history.values()):
        report = cluster.root / "report.txt"
        report.write_text(cluster.report())
        raise AssertionError(f"tries run again: {history}; components' output in {report}")
    for proc in (scheduler, worker):
        assert proc.alive(), proc.text()[-3000:]
    assert os.path.exists(f"/proc/{processor}")
    text = scheduler.text()
    assert len(lines(text, r"flowsched\.scheduler\.loop: metadata database .* unavailable")) == 1
    assert len(lines(text, r"flowsched\.scheduler\.loop: metadata database .* is back")) == 1
    assert len(lines(text, r"flowsched\.dag_processor: metadata database .* unavailable")) == 1


def test_a_redis_outage_loses_no_message_and_spends_no_retry(own_cluster: Cluster) -> None:
    cluster = own_cluster
    # Longer than the backlog after the outage takes to drain, shorter than the outage.
    configure(cluster, scheduler={"task_queued_timeout": "20"})
    scheduler = cluster.start_scheduler()
    worker = cluster.start_worker("w", concurrency=2)
    body = "\n".join(
        f"BashOperator(task_id='p{i}', bash_command='sleep 5; echo p{i}')" for i in range(4)
    )
    cluster.write_dag("gale", body)
    first = cluster.trigger("gale")
    # Two run; two wait in Redis, which keeps nothing across the restart.
    wait_for_count(cluster, "gale", first, "running", 2)

    cluster.redis.stop()
    # A run triggered during the outage: its tries wait in the scheduler's memory.
    second = cluster.trigger("gale")
    time.sleep(OUTAGE)  # longer than task_queued_timeout (20 s)
    for proc in (scheduler, worker):
        assert proc.alive(), proc.text()[-3000:]
    cluster.redis.start_again()

    for run_id in (first, second):
        state = cluster.wait_run("gale", run_id, timeout=120)
        history = {
            task_id: [(t.state, t.error) for t in cluster.tries("gale", run_id, task_id)]
            for task_id in cluster.tis("gale", run_id)
        }
        assert state == "success", (run_id, history)
    for run_id in (first, second):
        assert_ran_once_each(cluster, "gale", run_id)
        assert set(retries_spent(cluster, "gale", run_id).values()) == {0}
    # Tries the scheduler could not send were not taken for lost: sent once, run once.
    assert {ti.try_number for ti in cluster.tis("gale", second).values()} == {1}
    # The messages Redis lost were re-queued, with the reason on the try.
    lost = [
        t
        for task_id in cluster.tis("gale", first)
        for t in cluster.tries("gale", first, task_id)
        if t.state == "failed"
    ]
    assert lost, "Redis restarted empty: the waiting messages should have been lost"
    for t in lost:
        assert "queued for over 20 s without starting" in t.error
        assert "re-queued without spending a retry" in t.error
    for proc in (scheduler, worker):
        assert proc.alive(), proc.text()[-3000:]
    text = scheduler.text()
    assert len(lines(text, r"cannot send .* to the broker")) == 1
    assert len(lines(text, r"broker .* is back after")) == 1


def test_a_worker_killed_and_started_again_requeues_its_tries_at_once(
    own_cluster: Cluster,
) -> None:
    cluster = own_cluster
    # A long zombie threshold: only the restarted worker can find the tries in time.
    configure(cluster, scheduler={"zombie_threshold": "300"})
    scheduler = cluster.start_scheduler()
    victim = cluster.start_worker("w", concurrency=2)
    cluster.write_dag(
        "crash",
        "\n".join(
            f"BashOperator(task_id='c{i}', "
            "bash_command='sleep {{ 60 if try_number == 1 else 1 }}; echo ok')"
            for i in range(2)
        ),
    )
    run_id = cluster.trigger("crash")
    wait_for_count(cluster, "crash", run_id, "running", 2)
    assert {ti.worker_nodename for ti in cluster.tis("crash", run_id).values()} == {victim.nodename}

    victim.kill_tree()  # kill -9 of the worker and its tries: OOM, reboot
    killed_at = utcnow()
    again = cluster.start_worker("w", concurrency=2, hostname=victim.hostname)
    assert again.nodename == victim.nodename

    assert cluster.wait_run("crash", run_id, timeout=90) == "success"
    assert_ran_once_each(cluster, "crash", run_id)
    assert set(retries_spent(cluster, "crash", run_id).values()) == {0}
    for task_id in ("c0", "c1"):
        lost, done = cluster.tries("crash", run_id, task_id)
        assert lost.state == "failed"
        assert lost.error.startswith(f"lost with its worker: {victim.nodename} restarted")
        assert "re-queued without spending a retry (lost 1 of 1 allowed)" in lost.error
        # Found when the worker came back, not by the 300 s heartbeat timeout.
        assert lost.end_date - killed_at < timedelta(seconds=60)
        assert done.state == "success"
    assert f"re-queued 2 tries lost when {victim.nodename} last died" in again.text()
    assert scheduler.alive()


def test_a_worker_that_never_comes_back_has_its_tries_requeued_by_the_heartbeat_timeout(
    own_cluster: Cluster,
) -> None:
    cluster = own_cluster
    cluster.start_scheduler()
    victim = cluster.start_worker("gone", concurrency=1)
    cluster.write_dag(
        "vanish",
        "BashOperator(task_id='v', bash_command='sleep {{ 60 if try_number == 1 else 1 }}')",
    )
    run_id = cluster.trigger("vanish")
    cluster.wait_state("vanish", run_id, "v", "running")
    victim.kill_tree()
    survivor = cluster.start_worker("other", concurrency=1)

    assert cluster.wait_run("vanish", run_id, timeout=90) == "success"
    lost, done = cluster.tries("vanish", run_id, "v")
    assert lost.error.startswith(f"zombie: no heartbeat from {victim.nodename}")
    assert "re-queued without spending a retry" in lost.error
    assert (done.state, done.worker_nodename) == ("success", survivor.nodename)
    assert retries_spent(cluster, "vanish", run_id) == {"v": 0}
