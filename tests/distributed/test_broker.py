"""The broker is down at start, or restarts mid-run: nothing is lost or run twice at once.

These tests own their Redis (the shared cluster's must stay up), so they
build a second, smaller cluster: a scheduler and one worker.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator

import pytest

from tests.conftest import wait_until
from tests.distributed.conftest import Cluster, activate, make_cluster
from tests.servers import MariaDBServer, start_redis


@pytest.fixture(scope="module")
def lone_cluster(
    tmp_path_factory: pytest.TempPathFactory, mariadb_server: MariaDBServer
) -> Iterator[Cluster]:
    root = tmp_path_factory.mktemp("broker")
    redis = start_redis(root / "redis")
    redis.stop()  # its port is reserved for the cluster; Redis starts later, in the test
    cluster = make_cluster(root, mariadb_server, redis)
    try:
        yield cluster
    finally:
        cluster.stop_all()
        redis.stop()


@pytest.fixture
def broker_cluster(lone_cluster: Cluster, monkeypatch: pytest.MonkeyPatch) -> Cluster:
    activate(lone_cluster, monkeypatch)
    return lone_cluster


def _overlapping(tries: list) -> bool:
    spans = sorted((t.start_date, t.end_date) for t in tries if t.start_date is not None)
    return any(later[0] < earlier[1] for earlier, later in itertools.pairwise(spans))


def test_components_started_while_the_broker_is_down_wait_and_then_work(
    broker_cluster: Cluster,
) -> None:
    cluster = broker_cluster
    scheduler = cluster.start_scheduler()
    worker = cluster.start_worker("lone", concurrency=3, wait=False)
    cluster.a = worker
    cluster.write_dag("early", "BashOperator(task_id='t', bash_command='echo early')")
    run_id = cluster.trigger("early")  # the scheduler queues it; sending must wait

    wait_until(lambda: "cannot send early.t" in scheduler.text(), timeout=40)
    wait_until(lambda: "Trying again in" in worker.text(), timeout=40)
    assert worker.alive(), worker.text()[-2000:]
    assert scheduler.alive(), scheduler.text()[-2000:]
    assert f"Cannot connect to redis://:**@127.0.0.1:{cluster.redis.port}/0" in worker.text()
    assert f"worker {worker.nodename}: hostname {worker.hostname}" in worker.text()
    assert "Trying again in" in worker.text()
    assert "cannot send early.t" in scheduler.text()
    assert cluster.tis("early", run_id)["t"].state == "queued"

    cluster.redis.restart()
    cluster.wait_ready(worker)
    assert cluster.wait_run("early", run_id) == "success"
    assert cluster.tis("early", run_id)["t"].try_number == 1


def test_a_broker_restart_mid_run_loses_no_task_and_runs_none_twice_at_once(
    broker_cluster: Cluster,
) -> None:
    cluster = broker_cluster
    assert cluster.a is not None
    # Four slow tasks on three slots: one waits in Redis when it restarts.
    body = "\n".join(
        [
            *(f"p{i} = BashOperator(task_id='p{i}', bash_command='sleep 4')" for i in range(4)),
            "after = BashOperator(task_id='after', bash_command='echo after')",
            "[p0, p1, p2, p3] >> after",
        ]
    )
    cluster.write_dag("restart", body, retries=2)
    run_id = cluster.trigger("restart")
    slow = [f"p{i}" for i in range(4)]

    def states() -> list[str]:
        tis = cluster.tis("restart", run_id)
        return sorted(tis[task_id].state for task_id in slow)

    wait_until(lambda: states() == ["queued", "running", "running", "running"], timeout=30)
    tis = cluster.tis("restart", run_id)
    (waiting,) = [task_id for task_id in slow if tis[task_id].state == "queued"]

    # No persistence: the waiting message is gone for good.
    cluster.redis.restart()
    assert cluster.wait_run("restart", run_id, timeout=120) == "success"

    for task_id in slow:
        tries = cluster.tries("restart", run_id, task_id)
        assert not _overlapping(tries)
        if task_id != waiting:
            # The running tries kept going through the outage and finished once.
            assert [t.state for t in tries] == ["success"]
    first, second = cluster.tries("restart", run_id, waiting)
    assert first.state == "failed"
    assert "queued for over 12 s without starting" in first.error
    assert second.state == "success"
    assert cluster.a.alive()
    assert "Connection to broker lost" in cluster.a.text()
