"""A metadata database outage is weather, not death (local executor, real MariaDB).

These tests stop and start a MariaDB server of their own (the session's
shared one must stay up for the other tests): a real outage, with the
server process gone and its port refusing connections.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from sqlalchemy import func, select

from flowsched import operations
from flowsched.config import set_config
from flowsched.db.engine import reset_engine, session_scope
from flowsched.db.models import TaskInstance, TaskTry, XCom
from flowsched.web.users import create_user
from tests.conftest import Home, wait_until
from tests.distributed.conftest import descendants
from tests.harness import parse, run_finished
from tests.servers import MariaDBServer, free_port, start_mariadb, wait_for_port

OUTAGE = 20.0  # seconds the database stays down: longer than the zombie threshold

WEATHER = """
import time
from datetime import datetime
from flowsched import DAG, BashOperator, PythonOperator

def slow_value():
    time.sleep(4)
    return {"answer": 42}

with DAG("weather", schedule=None, start_date=datetime(2026, 1, 1),
         default_args={"retries": 0}) as dag:
    ends = [BashOperator(task_id=f"t{n}", bash_command="sleep 4; echo done") for n in range(3)]
    value = PythonOperator(task_id="value", python_callable=slow_value)
    after = BashOperator(task_id="after", bash_command="echo after")
    ends >> after
    value >> after
"""


@pytest.fixture(scope="module")
def own_mariadb(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MariaDBServer]:
    server = start_mariadb(tmp_path_factory.mktemp("outage-mariadb"))
    try:
        yield server
    finally:
        if server.process.poll() is None:
            server.stop()


@pytest.fixture
def outage_home(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, own_mariadb: MariaDBServer
) -> Iterator[Home]:
    from flowsched.db import migrate

    if own_mariadb.process.poll() is not None:  # a failed test left it stopped
        own_mariadb.start_again()
    name = f"o_{uuid.uuid4().hex[:12]}"
    home = Home(tmp_path / "home", own_mariadb.create_database(name))
    for key, value in home.env.items():
        monkeypatch.setenv(key, value)
    home.configure(
        database={"connect_timeout": "2"},
        scheduler={
            "zombie_threshold": "8",
            "task_queued_timeout": "8",
            "dag_dir_list_interval": "2",
        },
    )
    migrate.upgrade()
    yield home
    reset_engine()
    set_config(None)
    if own_mariadb.process.poll() is not None:
        own_mariadb.start_again()
    own_mariadb.drop_database(name)


def _spawn(home: Home, args: list[str], output: Path, **env: str) -> subprocess.Popen:
    with output.open("wb") as sink:
        return subprocess.Popen(
            [sys.executable, "-m", "flowsched", *args],
            env={**os.environ, **home.env, **env},
            stdout=sink,
            stderr=subprocess.STDOUT,
        )


def _stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
    try:
        process.wait(60)
    except subprocess.TimeoutExpired:
        for pid in [process.pid, *descendants(process.pid)]:
            os.kill(pid, signal.SIGKILL)
        process.wait(10)


def _lines(text: str, pattern: str) -> list[str]:
    return [line for line in text.splitlines() if re.search(pattern, line)]


def test_a_mariadb_outage_is_ridden_out_and_tries_finished_during_it_record_once(
    outage_home: Home, own_mariadb: MariaDBServer
) -> None:
    home = outage_home
    home.write_dag("weather.py", WEATHER)
    parse()
    run_id = operations.trigger_dag("weather", run_id="storm").run_id
    output = home.root / "scheduler.log"
    scheduler = _spawn(home, ["scheduler"], output)
    try:

        def all_running() -> bool:
            with session_scope() as session:
                running = session.scalar(
                    select(func.count())
                    .select_from(TaskInstance)
                    .where(TaskInstance.state == "running")
                )
            return running == 4

        wait_until(all_running, timeout=60, step=0.1)
        processor = [
            pid
            for pid in descendants(scheduler.pid)
            if b"dag-processor" in Path(f"/proc/{pid}/cmdline").read_bytes()
        ]
        assert len(processor) == 1

        own_mariadb.stop()
        down_at = time.monotonic()
        # Past the limit a component gives up with a clear message (here 3 s).
        quitter = subprocess.run(
            [sys.executable, "-m", "flowsched", "dag-processor"],
            env={**os.environ, **home.env, "FLOWSCHED__CORE__OUTAGE_TOLERANCE": "3"},
            capture_output=True,
            text=True,
            timeout=60,
        )
        time.sleep(max(0.0, OUTAGE - (time.monotonic() - down_at)))
        assert scheduler.poll() is None, output.read_text()[-3000:]
        assert os.path.exists(f"/proc/{processor[0]}"), "the DAG processor died in the outage"
        own_mariadb.start_again()
        reset_engine()

        wait_until(run_finished("weather", run_id), timeout=90, step=0.2)
        assert scheduler.poll() is None, output.read_text()[-3000:]
        assert os.path.exists(f"/proc/{processor[0]}")
    finally:
        if own_mariadb.process.poll() is not None:
            own_mariadb.start_again()
        _stop(scheduler)

    assert quitter.returncode == 1
    assert "longer than [core] outage_tolerance (3 s); giving up" in quitter.stderr

    with session_scope() as session:
        tis = session.scalars(select(TaskInstance)).all()
        tries = session.execute(select(TaskTry.task_id, TaskTry.try_number, TaskTry.state)).all()
        value = session.scalar(select(XCom.value).where(XCom.task_id == "value"))
    # Every task ran exactly once and succeeded, with retries=0: nothing redone, nothing lost.
    assert {(ti.task_id, ti.state, ti.try_number) for ti in tis} == {
        (task, "success", 1) for task in ("t0", "t1", "t2", "value", "after")
    }
    assert sorted(tries) == sorted(
        (task, 1, "success") for task in ("t0", "t1", "t2", "value", "after")
    )
    assert value == {"answer": 42}  # the return value, pushed during the outage, was kept

    text = output.read_text()
    # Logged once, and its end once: not a traceback per loop pass.
    assert len(_lines(text, r"flowsched\.scheduler\.loop: metadata database .* unavailable")) == 1
    assert len(_lines(text, r"flowsched\.scheduler\.loop: metadata database .* is back after")) == 1
    assert len(_lines(text, r"flowsched\.dag_processor: metadata database .* unavailable")) == 1
    assert "scheduler stopping" not in text.split("is back after")[0]
    # The tries ended in the outage and recorded their result when it was over.
    for task in ("t0", "t1", "t2"):
        log = (
            home.logs / f"dag_id=weather/run_id={run_id}/task_id={task}/attempt=1.log"
        ).read_text()
        assert "done" in log
        backoff = log.rindex("retrying with backoff")
        assert log.index("finished: success") > backoff
        assert "is back after" in log


def test_a_scheduler_started_while_the_database_is_down_waits_for_it(
    outage_home: Home, own_mariadb: MariaDBServer
) -> None:
    home = outage_home
    home.write_dag("weather.py", WEATHER)
    parse()
    output = home.root / "early.log"
    own_mariadb.stop()
    scheduler = _spawn(home, ["scheduler", "--no-dag-processor"], output)
    try:
        wait_until(lambda: "unavailable" in output.read_text(), timeout=60, step=0.2)
        time.sleep(3)
        assert scheduler.poll() is None, output.read_text()[-3000:]
        own_mariadb.start_again()
        reset_engine()
        run_id = operations.trigger_dag("weather", run_id="late").run_id
        wait_until(run_finished("weather", run_id), timeout=90, step=0.2)
        assert scheduler.poll() is None, output.read_text()[-3000:]
    finally:
        if own_mariadb.process.poll() is not None:
            own_mariadb.start_again()
        _stop(scheduler)
    assert scheduler.returncode == 0
    with session_scope() as session:
        states = set(session.execute(select(TaskInstance.state, TaskInstance.try_number)).all())
    assert states == {("success", 1)}
    text = output.read_text()
    assert len(_lines(text, r"metadata database .* unavailable")) == 1
    assert "scheduler started" in text.split("is back after")[1]


def test_the_webserver_process_rides_out_a_mariadb_stop_and_recovers_by_itself(
    outage_home: Home, own_mariadb: MariaDBServer
) -> None:
    """tests/web/test_api.py cuts a proxy in-process; here gunicorn itself, and a
    MariaDB server that really stops (and starts on the same data) under it."""
    home = outage_home
    home.configure(core={"secret_key": "outage-test-secret-3e9c1a7f5b2d8e4a6c0f"})
    create_user("viewer", "correct-horse-battery", "viewer")
    port = free_port()
    output = home.root / "web.log"
    web = _spawn(home, ["webserver", "--bind", f"127.0.0.1:{port}", "--workers", "1"], output)
    base = f"http://127.0.0.1:{port}"
    browser = requests.Session()
    try:
        wait_for_port(port, timeout=60, proc=web)
        form = browser.get(f"{base}/login", timeout=10)
        csrf = re.search(r'name="csrf_token" value="([^"]+)"', form.text)
        assert csrf is not None
        login = browser.post(
            f"{base}/login",
            data={
                "username": "viewer",
                "password": "correct-horse-battery",
                "csrf_token": csrf.group(1),
            },
            timeout=10,
        )
        assert login.status_code == 200 and "Log in" not in login.text
        assert browser.get(f"{base}/dags", timeout=10).status_code == 200
        own_mariadb.stop()
        try:
            page = browser.get(f"{base}/dags", timeout=10)
            assert page.status_code == 503, page.text[:2000]
            assert page.headers["Retry-After"] == "10"
            assert "Metadata database unavailable" in page.text
            health = requests.get(f"{base}/api/v1/health", timeout=10)
            assert health.status_code == 503
            assert health.json()["metadatabase"] == "unhealthy"
        finally:
            own_mariadb.start_again()
        # The same gunicorn, no restart: its pool reconnects on the next request.
        assert requests.get(f"{base}/api/v1/health", timeout=10).status_code == 200
        assert browser.get(f"{base}/dags", timeout=10).status_code == 200
        assert web.poll() is None, output.read_text()[-3000:]
    finally:
        browser.close()
        _stop(web)
    assert "Traceback" not in output.read_text()


PIPELINE = """
from datetime import datetime
from flowsched import DAG, BashOperator
with DAG("lossy", schedule=None, start_date=datetime(2026, 1, 1),
         default_args={"retries": 1}) as dag:
    BashOperator(task_id="t", bash_command="true")
"""


def test_lost_tries_are_free_up_to_max_lost_tries_then_count_as_failures(home: Home) -> None:
    from flowsched.lifecycle import requeue_lost_try
    from flowsched.state import TaskState

    home.write_dag("lossy.py", PIPELINE)
    parse()
    operations.trigger_dag("lossy", run_id="r")

    def lose(try_number: int) -> TaskState | None:
        with session_scope() as session:
            ti = session.scalar(select(TaskInstance).where(TaskInstance.dag_id == "lossy"))
            ti.state, ti.try_number = "running", try_number
            session.add(
                TaskTry(
                    task_instance_id=ti.id,
                    dag_id="lossy",
                    run_id="r",
                    task_id="t",
                    try_number=try_number,
                    state="running",
                )
            )
        with session_scope() as session:
            return requeue_lost_try(
                session,
                ti.id,
                try_number,
                reason="lost with its worker: w@h restarted",
                expected_states=(TaskState.RUNNING,),
                max_lost=2,
            )

    def instance() -> tuple[str, int, int]:
        with session_scope() as session:
            ti = session.scalar(select(TaskInstance).where(TaskInstance.dag_id == "lossy"))
            return ti.state, ti.max_tries, ti.lost_count

    # retries=1: max_tries 1. Two losses are free: each adds a try to spend.
    assert lose(1) == TaskState.UP_FOR_RETRY and instance() == ("up_for_retry", 2, 1)
    assert lose(2) == TaskState.UP_FOR_RETRY and instance() == ("up_for_retry", 3, 2)
    # The third is an ordinary failure: it spends the task's one retry.
    assert lose(3) == TaskState.UP_FOR_RETRY and instance() == ("up_for_retry", 3, 2)
    assert lose(4) == TaskState.FAILED and instance() == ("failed", 3, 2)
    # A try that already moved on is not touched (the guarded UPDATE matches nothing).
    with session_scope() as session:
        ti_id = session.scalar(select(TaskInstance.id).where(TaskInstance.dag_id == "lossy"))
        assert (
            requeue_lost_try(
                session,
                ti_id,
                4,
                reason="late",
                expected_states=(TaskState.RUNNING,),
                max_lost=2,
            )
            is None
        )
        errors = session.scalars(
            select(TaskTry.error).where(TaskTry.dag_id == "lossy").order_by(TaskTry.try_number)
        ).all()
    assert errors[0] == (
        "lost with its worker: w@h restarted: re-queued without spending a retry "
        "(lost 1 of 2 allowed)"
    )
    assert errors[1].endswith("(lost 2 of 2 allowed)")
    assert errors[2].endswith(
        "lost 2 times already ([scheduler] max_lost_tries = 2): counted as a failure"
    )
