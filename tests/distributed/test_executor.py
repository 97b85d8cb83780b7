"""What the CeleryExecutor puts on the wire, and what it does while the broker is away."""

from __future__ import annotations

import base64
import json
import logging
from pathlib import Path

import pytest
import redis

from flowsched.celery.app import TASK_NAME, make_app
from flowsched.celery.executor import CeleryExecutor, message_id
from flowsched.config import get_config
from flowsched.lifecycle import Workload
from tests.conftest import Home, wait_until
from tests.distributed.conftest import SECRET
from tests.servers import start_redis

WORKLOAD = Workload(
    ti_id=42,
    dag_id="etl",
    task_id="load",
    run_id="manual__2026-01-01T00:00:00+00:00",
    try_number=3,
    fingerprint="ab" * 32,
    fileloc="team/etl.py",
    queue="reports",
    dag_version_id=7,
)


@pytest.fixture
def celery_home(sqlite_home: Home) -> Home:
    sqlite_home.configure(
        core={"executor": "celery", "secret_key": SECRET},
        celery={"visibility_timeout": "7200"},
    )
    return sqlite_home


def test_settings_are_json_only_acks_late_and_use_the_visibility_timeout(celery_home: Home) -> None:
    conf = make_app().conf
    assert conf.accept_content == ["json"]
    assert conf.task_serializer == "json"
    assert conf.result_accept_content == ["json"]
    assert conf.task_acks_late is True
    assert conf.task_reject_on_worker_lost is True
    assert conf.worker_prefetch_multiplier == 1
    assert conf.broker_transport_options == {"visibility_timeout": 7200}
    assert conf.task_default_queue == "default"
    assert conf.worker_cancel_long_running_tasks_on_connection_loss is False


def _start(executor: CeleryExecutor) -> CeleryExecutor:
    executor.start()
    return executor


def test_the_message_is_small_json_routed_to_the_tasks_queue(
    celery_home: Home, tmp_path: Path
) -> None:
    server = start_redis(tmp_path / "redis")
    try:
        celery_home.configure(celery={"broker_url": server.url})
        executor = _start(CeleryExecutor())
        try:
            executor.queue(WORKLOAD)
            client = redis.Redis.from_url(server.url)
            wait_until(lambda: client.llen("reports") == 1, timeout=10)
            raw = client.lindex("reports", 0)
        finally:
            executor.end(grace=5)
    finally:
        server.stop()
    assert raw is not None
    assert len(raw) < 2048, f"message of {len(raw)} bytes"
    envelope = json.loads(raw)
    assert envelope["content-type"] == "application/json"
    assert envelope["headers"]["task"] == TASK_NAME
    assert envelope["headers"]["id"] == message_id(WORKLOAD)
    assert envelope["properties"]["delivery_info"]["routing_key"] == "reports"
    args, kwargs, _embed = json.loads(base64.b64decode(envelope["body"]))
    assert args == [WORKLOAD.to_dict()]
    assert kwargs == {}
    assert Workload.from_dict(args[0]) == WORKLOAD


def test_an_unreachable_broker_holds_workloads_and_sends_them_when_it_comes_back(
    celery_home: Home, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    server = start_redis(tmp_path / "redis")
    server.stop()  # the port is known, nothing listens on it yet
    celery_home.configure(celery={"broker_url": server.url})
    executor = _start(CeleryExecutor())
    try:
        with caplog.at_level(logging.ERROR, logger="flowsched.celery.executor"):
            capacity = executor.slots_available()
            executor.queue(WORKLOAD)  # must not raise: the scheduler loop goes on
            assert executor.slots_available() == capacity - 1
            wait_until(lambda: "cannot send etl.load" in caplog.text, timeout=15)
        assert f"redis://127.0.0.1:{server.port}/0" in caplog.text
        assert "retrying with backoff" in caplog.text

        server.restart()
        client = redis.Redis.from_url(server.url)
        wait_until(lambda: client.llen("reports") == 1, timeout=40)
        wait_until(lambda: executor.slots_available() == capacity, timeout=5)
        assert get_config().scheduler.max_tis_per_query == capacity
    finally:
        executor.end(grace=5)
        server.stop()


def test_only_the_end_of_a_try_wakes_the_scheduler(celery_home: Home, tmp_path: Path) -> None:
    # A worker sends three task events per try and heartbeats; only a try's end wakes
    # the scheduler. (Subscribing to those four events alone, a queue each, delayed
    # them: a chain's hop went from 31 to 53 ms with kombu's Redis transport.)
    server = start_redis(tmp_path / "redis")
    try:
        celery_home.configure(celery={"broker_url": server.url})
        executor = _start(CeleryExecutor())
        app = make_app()
        try:
            with app.connection_for_write() as connection:
                dispatcher = app.events.Dispatcher(connection, enabled=True)

                def woken_by(kind: str, timeout: float) -> bool:
                    executor.wakeup.clear()
                    dispatcher.send(kind, uuid="etl.load.try1")
                    return executor.wakeup.wait(timeout)

                # The listener subscribes in the background: the first end it hears.
                wait_until(lambda: woken_by("task-succeeded", 0.2), timeout=20)
                for other in ("task-received", "task-started", "worker-heartbeat"):
                    assert not woken_by(other, 1.0), f"{other} woke the scheduler"
                for kind in ("task-failed", "task-succeeded", "task-revoked", "task-rejected"):
                    assert woken_by(kind, 10.0), f"{kind} did not wake the scheduler"
                dispatcher.close()
        finally:
            executor.end(grace=5)
    finally:
        server.stop()
