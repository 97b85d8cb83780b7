"""A worker whose DAG file differs from the scheduler's never runs it; the retry runs elsewhere."""

from __future__ import annotations

from flowsched.celery.app import make_app
from flowsched.discovery import fingerprint_bytes
from tests.distributed.conftest import Cluster


def test_stale_or_missing_dag_file_fails_cleanly_and_the_retry_runs_on_another_worker(
    cluster: Cluster,
) -> None:
    drift_body = "BashOperator(task_id='t', queue='drift', bash_command='echo {marker}')"
    current = cluster.write_dag(
        "drift", drift_body.format(marker="current-code"), retries=2, retry_delay=3
    )
    # The stale worker's folder: an older edit of the same file, and no "absent" DAG at all.
    stale_dags = cluster.root / "stale-dags"
    stale = cluster.write_dag(
        "drift",
        drift_body.format(marker="stale-code"),
        retries=2,
        retry_delay=3,
        folder=stale_dags,
    )
    cluster.write_dag(
        "absent",
        "BashOperator(task_id='t', queue='drift', bash_command='echo absent-ran')",
        retries=2,
        retry_delay=3,
    )
    old = cluster.start_worker("stale", queues="drift", concurrency=2, dags_folder=stale_dags)
    drift_run = cluster.trigger("drift")
    absent_run = cluster.trigger("absent")
    cluster.wait_state("drift", drift_run, "t", "up_for_retry")
    cluster.wait_state("absent", absent_run, "t", "up_for_retry")

    # Like the rolling upgrade: the stale node stops taking the queue, a current one takes it.
    app = make_app()
    app.control.cancel_consumer("drift", destination=[old.nodename], reply=True, timeout=5)
    app.control.add_consumer("drift", destination=[cluster.b.nodename], reply=True, timeout=5)
    try:
        assert cluster.wait_run("drift", drift_run) == "success"
        assert cluster.wait_run("absent", absent_run) == "success"
    finally:
        app.control.cancel_consumer("drift", destination=[cluster.b.nodename], reply=True)
        old.terminate()

    scheduler_sha = fingerprint_bytes(current.read_bytes())
    worker_sha = fingerprint_bytes(stale.read_bytes())
    first, *_, last = cluster.tries("drift", drift_run, "t")
    assert first.state == "failed"
    assert first.worker_nodename == old.nodename
    assert first.error.startswith(
        f"dag file differs on worker {old.nodename}: scheduler has sha256 "
        f"{scheduler_sha[:12]}…, this worker has {worker_sha[:12]}…"
    )
    assert (last.state, last.worker_nodename) == ("success", cluster.b.nodename)

    first, *_, last = cluster.tries("absent", absent_run, "t")
    assert first.worker_nodename == old.nodename
    assert "does not exist on worker " + old.nodename in first.error
    assert (last.state, last.worker_nodename) == ("success", cluster.b.nodename)

    # Stale code never ran; the current code did, on the current worker.
    stale_log = old.log_folder / f"dag_id=drift/run_id={drift_run}/task_id=t/attempt=1.log"
    assert "dag file differs" in stale_log.read_text()
    assert "stale-code" not in stale_log.read_text()
    current_log = (
        cluster.b.log_folder
        / f"dag_id=drift/run_id={drift_run}/task_id=t/attempt={last.try_number}.log"
    )
    assert "current-code" in current_log.read_text()
