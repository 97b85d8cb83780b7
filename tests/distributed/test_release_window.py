"""A Celery worker that swapped DAG releases runs a try from the release it was queued with."""

from __future__ import annotations

from pathlib import Path

from tests.distributed.conftest import Cluster

BODY = "BashOperator(task_id='t', queue='window', bash_command='echo release-{marker}')"


def swap(root: Path, name: str) -> Path:
    """``root/current`` pointed at ``root/releases/name`` in one rename, as roles/dag_sync does."""
    link = root / "current.new"
    link.symlink_to(root / "releases" / name)
    link.rename(root / "current")
    return root / "releases" / name


def test_try_queued_before_a_sync_runs_the_kept_release_on_a_celery_worker(
    cluster: Cluster,
) -> None:
    # The worker's DAG folder: releases and a `current` link; the scheduler's is its own.
    root = cluster.root / "window-dags"
    for name, marker in (("20260101T000000Z-one", "one"), ("20260101T000100Z-two", "two")):
        cluster.write_dag("window", BODY.format(marker=marker), folder=root / "releases" / name)
    swap(root, "20260101T000000Z-one")
    cluster.write_dag("window", BODY.format(marker="one"))
    run_id = cluster.trigger("window")
    cluster.wait_state("window", run_id, "t", "queued")

    # The sync lands before any worker takes the try; then a worker takes it.
    swap(root, "20260101T000100Z-two")
    worker = cluster.start_worker("window", queues="window", dags_folder=root / "current")
    try:
        assert cluster.wait_run("window", run_id) == "success"
    finally:
        worker.terminate()
    (only,) = cluster.tries("window", run_id, "t")
    assert (only.state, only.worker_nodename) == ("success", worker.nodename)
    log = (worker.log_folder / f"dag_id=window/run_id={run_id}/task_id=t/attempt=1.log").read_text()
    assert "release-one" in log and "release-two" not in log
