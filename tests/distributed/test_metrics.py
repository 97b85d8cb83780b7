"""The /metrics of a real cluster, scraped over HTTP after a small DAG ran.

Scheduler (with its DAG processor), a Celery worker and the gunicorn webserver
(two worker processes, so multiprocess mode is what is summed) each serve their
own port; the figures must say what happened: tries by how they ended, their
durations, runs, slots, parse times, request counts. The Grafana dashboard in
docs/ must only query metrics that a real scrape has.
"""

from __future__ import annotations

import glob
import json
import re
import tempfile
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from flowsched.metrics.web import DIR_PREFIX
from tests.conftest import wait_until
from tests.distributed.conftest import Cluster, Proc, activate, make_cluster
from tests.servers import MariaDBServer, free_port, start_redis

DASHBOARD = Path(__file__).parents[2] / "docs" / "grafana-dashboard.json"
COMPONENTS = ("scheduler", "dag_processor", "worker", "webserver")

Sample = tuple[str, dict[str, str], float]


def scrape(port: int) -> list[Sample]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as answer:
        text = answer.read(8 * 1024 * 1024).decode()
    return [
        (sample.name, sample.labels, sample.value)
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    ]


def value(samples: list[Sample], name: str, **labels: str) -> float | None:
    """The sum of the samples of ``name`` with these labels; None when there is none."""
    found = [v for n, lab, v in samples if n == name and labels.items() <= lab.items()]
    return sum(found) if found else None


def answers(port: int) -> bool:
    try:
        scrape(port)
    except OSError:
        return False
    return True


@pytest.fixture
def metered(
    tmp_path: Path, mariadb_server: MariaDBServer, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[Cluster, dict[str, int]]]:
    redis = start_redis(tmp_path / "redis")
    cluster = make_cluster(tmp_path, mariadb_server, redis)
    ports = {component: free_port() for component in COMPONENTS}
    cluster.home.configure(
        metrics={
            "prometheus_on": "true",
            "prometheus_host": "127.0.0.1",
            "collect_interval": "0.5",
            **{f"{component}_port": str(port) for component, port in ports.items()},
        }
    )
    activate(cluster, monkeypatch)
    try:
        yield cluster, ports
    finally:
        cluster.stop_all()
        redis.stop()


def test_every_component_serves_metrics_that_say_what_happened(
    metered: tuple[Cluster, dict[str, int]],
) -> None:
    cluster, ports = metered
    cluster.write_dag(
        "metered",
        """
ok = BashOperator(task_id='ok', bash_command='echo fine')
bad = BashOperator(task_id='bad', bash_command='exit 3')
slow = BashOperator(task_id='slow', bash_command='sleep 2')
""",
        retries=1,
    )
    (cluster.home.dags / "broken.py").write_text("import no_such_module_anywhere\n")
    cluster.start_scheduler()
    worker = cluster.start_worker("m", concurrency=2)
    web_bind = f"127.0.0.1:{free_port()}"
    process, output = cluster._spawn(
        "webserver", ["webserver", "--bind", web_bind, "--workers", "2"], {}
    )
    web = Proc("webserver", process, output)
    cluster.procs.append(web)

    # The scheduler's first read of the cluster (its starting point) comes before the run.
    def collected() -> bool:
        samples = scrape(ports["scheduler"]) if answers(ports["scheduler"]) else []
        return value(samples, "flowsched_task_instances", state="queued") == 0

    wait_until(collected, timeout=60, step=0.2)
    run_id = cluster.trigger("metered")
    cluster.wait_state("metered", run_id, "slow", "running")
    busy = value(scrape(ports["worker"]), "flowsched_worker_slots", state="busy")
    assert busy is not None and busy >= 1
    assert cluster.wait_run("metered", run_id) == "failed"

    # -- scheduler: tries and runs, counted once each -------------------------
    def counted() -> bool:
        samples = scrape(ports["scheduler"])
        return (
            value(samples, "flowsched_ti_finish_total", task_id="bad", state="failed") == 2
            and value(samples, "flowsched_dagrun_finish_total", dag_id="metered") == 1
        )

    wait_until(counted, timeout=30, step=0.3)
    sched = scrape(ports["scheduler"])

    def ti(name: str, task_id: str, **labels: str) -> float | None:
        return value(sched, name, dag_id="metered", task_id=task_id, **labels)

    assert ti("flowsched_ti_finish_total", "ok", state="success") == 1
    assert ti("flowsched_ti_finish_total", "slow", state="success") == 1
    assert ti("flowsched_ti_finish_total", "ok", state="failed") is None
    assert ti("flowsched_ti_start_total", "bad") == 2
    assert ti("flowsched_task_duration_seconds_count", "bad") == 2
    slow_seconds = ti("flowsched_task_duration_seconds_sum", "slow")
    assert slow_seconds is not None and slow_seconds >= 2
    assert value(sched, "flowsched_dagrun_finish_total", dag_id="metered", state="failed") == 1
    assert value(sched, "flowsched_dagrun_start_total", dag_id="metered") == 1
    for state in ("scheduled", "queued", "running", "up_for_retry"):
        assert value(sched, "flowsched_task_instances", state=state) == 0
    total = value(sched, "flowsched_pool_slots", pool="default_pool", state="total")
    assert (
        total and value(sched, "flowsched_pool_slots", pool="default_pool", state="open") == total
    )
    assert value(sched, "flowsched_zombies_killed_total") == 0
    passes = value(sched, "flowsched_scheduler_loop_duration_seconds_count")
    assert passes and passes == value(sched, "flowsched_scheduler_heartbeat_total")

    # -- DAG processor: per-file parse times and the import error -------------
    parsing = scrape(ports["dag_processor"])
    assert (
        value(parsing, "flowsched_dag_processing_last_duration_seconds", file="metered.py") or 0
    ) > 0
    assert value(parsing, "flowsched_dag_processing_import_errors") == 1
    assert value(parsing, "flowsched_dag_processing_file_count") == 2

    # -- worker: four tries handed to its pool, nothing running now ---------
    work = scrape(ports["worker"])
    assert value(work, "flowsched_worker_tasks_started_total", worker=worker.nodename) == 4
    assert value(work, "flowsched_worker_slots", worker=worker.nodename, state="busy") == 0
    assert value(work, "flowsched_worker_slots", worker=worker.nodename, state="open") == 2

    # -- webserver: requests counted across gunicorn's workers ---------------
    wait_until(lambda: answers(ports["webserver"]), timeout=60, step=0.2)
    for _ in range(6):
        with urllib.request.urlopen(f"http://{web_bind}/api/v1/health", timeout=10) as answer:
            assert answer.status == 200
    webm = scrape(ports["webserver"])
    health = {"endpoint": "api.health", "method": "GET", "status": "200"}
    assert value(webm, "flowsched_webserver_request_duration_seconds_count", **health) == 6
    for url in (
        f"http://127.0.0.1:{ports['webserver']}/api/v1/health",
        f"http://{web_bind}/metrics",
    ):
        with pytest.raises(urllib.error.HTTPError, match="404"):
            urllib.request.urlopen(url, timeout=10)  # each port serves only its own
    pattern = f"{tempfile.gettempdir()}/{DIR_PREFIX}{web.process.pid}-*"
    assert len(glob.glob(pattern)) == 1

    # -- the dashboard queries only what a real scrape has -------------------
    exposed = {name for samples in (sched, parsing, work, webm) for name, _, _ in samples}
    dashboard = json.loads(DASHBOARD.read_text())
    queried = {
        name
        for panel in dashboard["panels"]
        for target in panel.get("targets", [])
        for name in re.findall(r"flowsched_[a-z_]+", target["expr"])
    }
    assert len(queried) >= 15
    assert queried - exposed == set()

    # Within gunicorn's 30 s graceful timeout: its workers exit, none hangs at exit.
    assert web.terminate(timeout=25) == 0
    assert glob.glob(pattern) == []  # the multiprocess files went with the webserver
