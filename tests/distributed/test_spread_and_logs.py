"""One DAG's tasks run on both workers; each log is fetched from the worker that wrote it."""

from __future__ import annotations

import subprocess
import sys

from flowsched.celery.inspect import list_workers
from flowsched.task_logs.client import fetch_task_log_tail
from tests.distributed.conftest import Cluster


def test_tasks_spread_over_both_workers_and_logs_come_from_each(cluster: Cluster) -> None:
    # Six one-second tasks on two workers of concurrency 2: neither can take them all.
    body = "\n".join(
        f"BashOperator(task_id='t{i}', bash_command='echo marker-t{i} on $HOSTNAME; sleep 1')"
        for i in range(6)
    )
    cluster.write_dag("spread", body)
    run_id = cluster.trigger("spread")
    assert cluster.wait_run("spread", run_id) == "success"

    tis = cluster.tis("spread", run_id)
    assert {ti.state for ti in tis.values()} == {"success"}
    assert {ti.worker_nodename for ti in tis.values()} == {
        cluster.a.nodename,
        cluster.b.nodename,
    }
    # The hostname recorded is FLOWSCHED_HOSTNAME, never socket.getfqdn().
    assert {ti.hostname for ti in tis.values()} == {cluster.a.hostname, cluster.b.hostname}

    # This process's log folder is empty: every log below came over HTTP from
    # the log server of the worker whose address is recorded on the try.
    assert not any(cluster.home.logs.iterdir())
    for worker in (cluster.a, cluster.b):
        ti = next(ti for ti in tis.values() if ti.hostname == worker.hostname)
        text = fetch_task_log_tail(ti.hostname, "spread", run_id, ti.task_id, 1, 1 << 20).text()
        assert f"marker-{ti.task_id}" in text
        assert f"on {worker.nodename} ({worker.hostname})" in text
        assert (worker.log_folder / f"dag_id=spread/run_id={run_id}").is_dir()

    # The CLI goes through the same path.
    task_id = next(iter(tis))
    result = subprocess.run(
        [sys.executable, "-m", "flowsched", "tasks", "log", "spread", task_id, run_id],
        capture_output=True,
        text=True,
        env=cluster.cli_env(),
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert f"marker-{task_id}" in result.stdout


def test_workers_lists_live_nodes_with_hostname_version_queues(cluster: Cluster) -> None:
    from flowsched import __version__

    found = {worker["nodename"]: worker for worker in list_workers(timeout=2.0)}
    for worker in (cluster.a, cluster.b):
        info = found[worker.nodename]
        assert info["hostname"] == worker.hostname
        assert info["version"] == __version__
        assert info["queues"] == ["default"]
        assert info["active"] == 0

    result = subprocess.run(
        [sys.executable, "-m", "flowsched", "workers", "--timeout", "2"],
        capture_output=True,
        text=True,
        env=cluster.cli_env(),
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["nodename", "hostname", "version", "queues", "active"]
    assert any(line.split()[:2] == [cluster.a.nodename, cluster.a.hostname] for line in lines)
    assert any(line.split()[:2] == [cluster.b.nodename, cluster.b.hostname] for line in lines)


def test_tasks_log_follow_tails_a_running_try_from_its_worker_until_it_ends(
    cluster: Cluster,
) -> None:
    cluster.write_dag(
        "tail",
        "BashOperator(task_id='t', "
        "bash_command='for i in 1 2 3 4; do echo tail-line-$i; sleep 1; done')",
    )
    run_id = cluster.trigger("tail")
    cluster.wait_state("tail", run_id, "t", "running")
    follower = subprocess.Popen(
        [sys.executable, "-m", "flowsched", "tasks", "log", "tail", "t", run_id, "--follow"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=cluster.cli_env(),
    )
    assert follower.stdout is not None
    first = follower.stdout.readline()
    # The first line arrives while the try is still running...
    assert cluster.tis("tail", run_id)["t"].state == "running"
    assert "running tail.t" in first
    rest = follower.stdout.read()  # returns at EOF: the command ended by itself
    # ...and the command ends once the try has ended, with every line.
    assert follower.wait(10) == 0, rest
    text = first + rest
    for i in range(1, 5):
        assert f"tail-line-{i}" in text
    assert "finished: success" in text
    assert cluster.tis("tail", run_id)["t"].state == "success"
