"""`flowsched standalone` on a machine with nothing set up, stopped with Ctrl-C."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from tests.servers import free_port

SLOW = """
from datetime import datetime
from flowsched import DAG, BashOperator
with DAG("slow", start_date=datetime(2026, 1, 1)) as dag:
    BashOperator(task_id="quick", bash_command="echo quick")
    BashOperator(task_id="long", bash_command="sleep 60", retries=0)
"""


def query(db: Path, sql: str) -> list[tuple]:
    with sqlite3.connect(db) as conn:
        return conn.execute(sql).fetchall()


def wait(predicate, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if predicate():
                return
        except sqlite3.Error:
            pass
        time.sleep(0.2)
    raise AssertionError(f"not reached in {timeout}s: {predicate}")


def _http_status(url: str) -> int | None:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status
    except OSError:
        return None


def flowsched(env, *args):
    return subprocess.run(
        [sys.executable, "-m", "flowsched", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_standalone_from_nothing_runs_examples_and_stops_cleanly(tmp_path):
    home = tmp_path / "fresh"
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLOWSCHED")}
    env.update(
        HOME=str(tmp_path),
        FLOWSCHED_HOME=str(home),
        FLOWSCHED__SCHEDULER__SHUTDOWN_GRACE="3",
        FLOWSCHED__WEBSERVER__BIND=f"127.0.0.1:{port}",
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "flowsched", "standalone"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    db = home / "flowsched.db"
    try:
        wait(
            lambda: (
                {"example_etl", "example_branches"}
                <= {r[0] for r in query(db, "select dag_id from dag")}
            )
        )
        assert (home / "flowsched.cfg").stat().st_mode & 0o077 == 0  # holds the secret key
        assert "example_etl.py" in os.listdir(home / "dags")
        # The webserver comes up beside the scheduler, with an admin login ready.
        wait(lambda: _http_status(f"http://127.0.0.1:{port}/api/v1/health") == 200)
        assert _http_status(f"http://127.0.0.1:{port}/login") == 200
        password_file = home / "standalone_admin_password.txt"
        assert password_file.read_text().strip() and password_file.stat().st_mode & 0o077 == 0
        (home / "dags" / "slow.py").write_text(SLOW)
        assert flowsched(env, "dags", "trigger", "example_etl", "--run-id", "etl").returncode == 0
        wait(lambda: query(db, "select state from dag_run where run_id='etl'") == [("success",)])
        wait(lambda: ("slow",) in query(db, "select dag_id from dag"), timeout=60)
        assert flowsched(env, "dags", "trigger", "slow", "--run-id", "s").returncode == 0
        wait(
            lambda: (
                query(db, "select state from task_instance where run_id='s' and task_id='long'")
                == [("running",)]
            )
        )
        proc.send_signal(signal.SIGINT)  # Ctrl-C
        output, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, output
    assert "Traceback" not in output
    assert f"webserver: http://127.0.0.1:{port}/" in output
    assert _http_status(f"http://127.0.0.1:{port}/api/v1/health") is None  # stopped too
    states = dict(query(db, "select task_id, state from task_instance where run_id='s'"))
    # The quick task finished; the long one was interrupted and left ready for retry.
    assert states == {"quick": "success", "long": "up_for_retry"}
    tries = query(db, "select state, error from task_try where task_id='long'")
    assert tries[0][0] == "failed" and "will be retried" in tries[0][1]
    jobs = query(db, "select state from job where job_type='scheduler'")
    assert jobs == [("success",)]
