"""On the Celery cluster: a large log is shown as its tail and downloaded whole from its worker,
and a try whose log cannot be written on the worker fails with the reason on its row."""

from __future__ import annotations

import hashlib
import subprocess
import sys
import uuid
from pathlib import Path

from flowsched.task_logs.files import relative_log_path
from flowsched.web.app import create_app
from flowsched.web.users import create_token, create_user
from tests.distributed.conftest import Cluster

MiB = 1024 * 1024


def _sha256_file(path: Path) -> tuple[str, int]:
    digest, total = hashlib.sha256(), 0
    with path.open("rb") as source:
        while chunk := source.read(MiB):
            digest.update(chunk)
            total += len(chunk)
    return digest.hexdigest(), total


def _sha256_chunks(chunks) -> tuple[str, int]:
    digest, total = hashlib.sha256(), 0
    for chunk in chunks:
        digest.update(chunk)
        total += len(chunk)
    return digest.hexdigest(), total


def test_a_large_remote_log_is_tailed_on_pages_and_streamed_whole(cluster: Cluster) -> None:
    # About 3 MiB of numbered lines, written by the task on whichever worker takes it.
    cluster.write_dag(
        "biglog",
        "BashOperator(task_id='t', bash_command='seq -f \"big line %08g\" 1 250000')",
    )
    run_id = cluster.trigger("biglog")
    assert cluster.wait_run("biglog", run_id) == "success"
    ti = cluster.tis("biglog", run_id)["t"]
    worker = cluster.worker_named(ti.worker_nodename)
    written = worker.log_folder / relative_log_path("biglog", run_id, "t", 1)
    expected = _sha256_file(written)
    assert expected[1] > 3 * MiB
    assert not (cluster.home.logs / "dag_id=biglog").exists()  # only the worker has it

    name = f"viewer_{uuid.uuid4().hex[:8]}"
    create_user(name, "viewer-password-1", "viewer")
    headers = {"Authorization": f"Bearer {create_token(name, 'tests')}"}
    client = create_app(secret_key="test").test_client()
    url = f"/api/v1/dags/biglog/runs/{run_id}/tasks/t/tries/1/log"
    answer = client.get(url, headers=headers).get_json()
    assert answer["truncated"] is True and answer["size"] == expected[1], answer.get("detail")
    assert answer["hostname"] == worker.hostname
    assert len(answer["content"].encode()) <= MiB
    assert answer["content"].startswith("big line ")
    assert "big line 00250000\n" in answer["content"] and "finished: success" in answer["content"]
    full = client.get(url + "?full_content=true", headers=headers)
    assert full.status_code == 200 and full.is_streamed
    assert _sha256_chunks(full.response) == expected

    # flowsched tasks log streams the whole log from the worker's log server.
    with subprocess.Popen(
        [sys.executable, "-m", "flowsched", "tasks", "log", "biglog", "t", run_id],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=cluster.cli_env(),
    ) as command:
        assert command.stdout is not None
        got = _sha256_chunks(iter(lambda: command.stdout.read(MiB), b""))
        assert command.wait(60) == 0, command.stderr.read(10_000) if command.stderr else ""
    assert got == expected


def test_a_try_whose_log_cannot_be_written_on_the_worker_records_why(cluster: Cluster) -> None:
    for worker in (cluster.a, cluster.b):
        assert worker is not None
        worker.log_folder.mkdir(parents=True, exist_ok=True)
        (worker.log_folder / "dag_id=nolog").write_text("a file where a folder should be")
    cluster.write_dag("nolog", "BashOperator(task_id='t', bash_command='echo never')")
    run_id = cluster.trigger("nolog")
    assert cluster.wait_run("nolog", run_id) == "failed"
    [attempt] = cluster.tries("nolog", run_id, "t")
    assert attempt.state == "failed"
    assert "cannot write the log of this try on" in attempt.error, attempt.error
    assert "NotADirectoryError" in attempt.error and attempt.worker_nodename in attempt.error
    result = subprocess.run(
        [sys.executable, "-m", "flowsched", "tasks", "states", "nolog", run_id],
        capture_output=True,
        text=True,
        env=cluster.cli_env(),
        timeout=60,
    )
    assert result.returncode == 0 and "NotADirectoryError" in result.stdout, result.stdout
