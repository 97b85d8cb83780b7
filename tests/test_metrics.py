"""Metrics in one process: StatsD datagrams under Airflow's names, and bad ports named.

The Prometheus endpoints of the real scheduler, DAG processor, Celery worker and
gunicorn webserver are scraped in tests/distributed/test_metrics.py.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest

from flowsched.config import get_config
from flowsched.exceptions import FlowschedError
from flowsched.metrics.scheduler import SchedulerMetrics
from tests.conftest import Home
from tests.harness import drive, parse

DAG = """
from datetime import datetime
from flowsched import DAG, BashOperator

with DAG("stats", schedule=None, start_date=datetime(2026, 1, 1)) as dag:
    ok = BashOperator(task_id="ok", bash_command="true")
    bad = BashOperator(task_id="bad", bash_command="exit 3")
    ok >> bad
"""


@pytest.fixture
def listener() -> Iterator[socket.socket]:
    """A real UDP socket standing in for the StatsD daemon."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.setblocking(False)
        yield sock


def _drain(sock: socket.socket, into: list[str]) -> None:
    while True:
        try:
            into.append(sock.recv(65536).decode())
        except BlockingIOError:
            return


def test_statsd_gets_airflow_names_for_what_the_scheduler_saw(
    sqlite_home: Home, listener: socket.socket
) -> None:
    from flowsched.operations import trigger_dag

    port = listener.getsockname()[1]
    sqlite_home.configure(
        metrics={
            "statsd_on": "true",
            "statsd_host": "127.0.0.1",
            "statsd_port": str(port),
            "statsd_prefix": "airflow",
            "collect_interval": "0.2",
        }
    )
    sqlite_home.write_dag("stats.py", DAG)
    parse()
    lines: list[str] = []
    wanted = {
        "airflow.ti.finish.stats.ok.success:1|c",
        "airflow.ti.finish.stats.bad.failed:1|c",
        "airflow.ti.start.stats.ok:1|c",
        "airflow.ti_successes:1|c",
        "airflow.ti_failures:1|c",
    }

    def all_sent() -> bool:
        _drain(listener, lines)
        return wanted <= set(lines) and any(
            line.startswith("airflow.dagrun.duration.failed.stats:") for line in lines
        )

    trigger_dag("stats", actor="test")
    drive(all_sent)

    assert "airflow.scheduler_heartbeat:1|c" in lines
    timers = {line.split(":")[0] for line in lines if line.endswith("|ms")}
    assert {
        "airflow.scheduler.scheduler_loop_duration",
        "airflow.dag.stats.ok.duration",
        "airflow.dag.stats.bad.duration",
        "airflow.dagrun.duration.failed.stats",
    } <= timers
    gauges = {line.split(":")[0] for line in lines if line.endswith("|g")}
    assert {"airflow.pool.open_slots.default_pool", "airflow.executor.open_slots"} <= gauges
    # Each try is counted once, however many reads saw it finished.
    assert lines.count("airflow.ti.finish.stats.ok.success:1|c") == 1


def test_a_metrics_port_in_use_names_the_setting(sqlite_home: Home) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        sqlite_home.configure(
            metrics={
                "prometheus_on": "true",
                "prometheus_host": "127.0.0.1",
                "scheduler_port": str(port),
            }
        )
        metrics = SchedulerMetrics(get_config())
        with pytest.raises(FlowschedError, match=r"\[metrics\] scheduler_port"):
            metrics.start(get_config())


def test_only_the_oldest_live_scheduler_publishes_the_cluster_figures(sqlite_home: Home) -> None:
    """With two schedulers each try is counted by one of them, so dashboards may sum."""
    from datetime import timedelta

    from sqlalchemy import update

    from flowsched.db.engine import session_scope
    from flowsched.db.models import Job
    from flowsched.timezone import utcnow

    sqlite_home.configure(metrics={"prometheus_on": "true", "collect_interval": "0.001"})
    with session_scope() as session:
        jobs = [
            Job(
                job_type="scheduler",
                state="running",
                hostname="h",
                pid=1,
                version="t",
                start_date=utcnow(),
                latest_heartbeat=utcnow(),
            )
            for _ in range(2)
        ]
        session.add_all(jobs)
        session.flush()
        first, second = (job.id for job in jobs)
    one, two = SchedulerMetrics(get_config()), SchedulerMetrics(get_config())

    def published(metrics: SchedulerMetrics) -> bool:
        return (
            metrics.registry.get_sample_value("flowsched_task_instances", {"state": "queued"}) == 0
        )

    one.collect_if_due(first)
    two.collect_if_due(second)
    assert published(one) and not published(two)

    with session_scope() as session:  # the first scheduler stops heartbeating
        session.execute(
            update(Job)
            .where(Job.id == first)
            .values(latest_heartbeat=utcnow() - timedelta(hours=1))
        )
    one.collect_if_due(first)
    two.collect_if_due(second)
    assert published(two) and not published(one)


def test_a_try_row_committed_after_a_newer_one_is_still_counted(sqlite_home: Home) -> None:
    """Ids are handed out at insert and may commit out of order (two schedulers): an id
    skipped over is looked for again, and every try is counted exactly once."""
    from sqlalchemy import delete, insert

    from flowsched.db.engine import session_scope
    from flowsched.db.models import DagRun, TaskInstance, TaskTry
    from flowsched.metrics.cluster import ClusterReader
    from flowsched.timezone import utcnow

    def add(try_id: int, ended: bool) -> None:
        now = utcnow()
        with session_scope() as session:
            session.execute(
                insert(TaskTry).values(
                    id=try_id,
                    task_instance_id=try_id,
                    dag_id="d",
                    run_id="r",
                    task_id=f"t{try_id}",
                    try_number=1,
                    state="success" if ended else "running",
                    start_date=now,
                    end_date=now if ended else None,
                    duration=0.5 if ended else None,
                )
            )

    with session_scope() as session:  # task instances for the tries to belong to
        run = DagRun(
            dag_id="d",
            run_id="r",
            run_type="manual",
            state="success",
            logical_date=utcnow(),
            created_at=utcnow(),
        )
        session.add(run)
        session.flush()
        session.add_all(
            TaskInstance(
                id=n, dag_run_id=run.id, dag_id="d", run_id="r", task_id=f"t{n}", state="success"
            )
            for n in (1, 2, 3)
        )
    reader = ClusterReader()
    with session_scope() as session:
        reader.read(session)  # the starting point: an empty history
    add(1, ended=True)
    add(3, ended=False)  # 2 is not committed yet
    with session_scope() as session:
        first = reader.read(session)
    add(2, ended=True)
    with session_scope() as session:
        session.execute(delete(TaskTry).where(TaskTry.id == 3))
        session.execute(
            insert(TaskTry).values(
                id=3,
                task_instance_id=3,
                dag_id="d",
                run_id="r",
                task_id="t3",
                try_number=1,
                state="failed",
                start_date=utcnow(),
                end_date=utcnow(),
                duration=1.0,
            )
        )
    with session_scope() as session:
        second = reader.read(session)
    with session_scope() as session:
        third = reader.read(session)

    assert sorted(e.task_id for e in first.tries_ended) == ["t1"]
    assert sorted(t for _, t in first.tries_started) == ["t1", "t3"]
    assert sorted((e.task_id, e.state) for e in second.tries_ended) == [
        ("t2", "success"),
        ("t3", "failed"),
    ]
    assert [t for _, t in second.tries_started] == ["t2"]  # t3's start was counted before
    assert third.tries_ended == [] and third.tries_started == []
