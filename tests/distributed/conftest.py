"""A real cluster for the distributed tests: MariaDB, Redis, a scheduler, workers.

Every component is a separate process started with the ``flowsched`` CLI, as
systemd would. Each worker has its own nodename, its own
``FLOWSCHED_HOSTNAME`` (127.0.0.2, 127.0.0.3, … : loopback addresses Linux
answers without configuration), its own log folder and its own log server
bound to that address, so a log can only be read through the right worker's
log server. The test process itself has an empty log folder.

The cluster is shared by the tests of the session (starting it costs
seconds); each test uses its own DAG, and tests that kill or stop a worker
start a replacement.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from flowsched.config import load_config, set_config
from flowsched.db.engine import reset_engine, session_scope
from flowsched.processes import descendants
from tests.conftest import Home, wait_until
from tests.servers import MariaDBServer, RedisServer, free_port, start_redis

SECRET = "distributed-test-secret-6a1c3e5f7b9d0f2a4c6e8b1d"


@dataclass
class Proc:
    """A component process with its output in a file the test can read."""

    name: str
    process: subprocess.Popen
    output: Path

    def text(self) -> str:
        return self.output.read_text(errors="replace")

    def alive(self) -> bool:
        return self.process.poll() is None

    def terminate(self, timeout: float = 60) -> int:
        if self.alive():
            self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout)

    def kill_tree(self) -> None:
        """SIGKILL the process and everything below it: a machine that died.

        Each is stopped first, until no new descendant shows up: a stopped process
        cannot fork, while one killed from a list taken earlier could have started a
        child meanwhile (a try's shell), orphaned and left running (found by
        tests/leftovers.py: a `sleep 60` outlived its test).
        """
        tree: list[int] = []
        while new := [
            pid for pid in (self.process.pid, *descendants(self.process.pid)) if pid not in tree
        ]:
            for pid in new:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGSTOP)
            tree.extend(new)
        for pid in tree:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        self.process.wait(10)


@dataclass
class Worker(Proc):
    nodename: str = ""
    hostname: str = ""
    log_folder: Path = field(default_factory=Path)


class Cluster:
    def __init__(self, home: Home, redis: RedisServer, root: Path) -> None:
        self.home = home
        self.redis = redis
        self.root = root
        self.log_port = free_port()
        self.procs: list[Proc] = []
        self._next_host = 2
        # The two long-lived workers of the shared cluster (replaced when a test kills one).
        self.a: Worker | None = None
        self.b: Worker | None = None

    # -- processes --------------------------------------------------------
    def _spawn(self, name: str, args: list[str], env: dict[str, str]) -> tuple[Any, Path]:
        output = self.root / "output" / f"{name}-{uuid.uuid4().hex[:6]}.log"
        output.parent.mkdir(parents=True, exist_ok=True)
        with output.open("wb") as sink:
            process = subprocess.Popen(
                [sys.executable, "-m", "flowsched", *args],
                env={**os.environ, **self.home.env, **env},
                stdout=sink,
                stderr=subprocess.STDOUT,
            )
        return process, output

    def start_scheduler(self) -> Proc:
        process, output = self._spawn("scheduler", ["scheduler"], {})
        proc = Proc("scheduler", process, output)
        self.procs.append(proc)
        return proc

    def start_worker(
        self,
        name: str,
        *,
        queues: str | None = None,
        concurrency: int = 2,
        dags_folder: Path | None = None,
        env: dict[str, str] | None = None,
        wait: bool = True,
        hostname: str | None = None,
    ) -> Worker:
        """A worker ``{name}@{hostname}``; a new loopback address unless ``hostname``
        is given (the same name and address: the same worker started again)."""
        if hostname is None:
            hostname = f"127.0.0.{self._next_host}"
            self._next_host += 1
        nodename = f"{name}@{hostname}"
        log_folder = self.root / f"worker-{name}-{hostname}" / "logs"
        worker_env = {
            "FLOWSCHED_HOSTNAME": hostname,
            "FLOWSCHED__LOGGING__BASE_LOG_FOLDER": str(log_folder),
            "FLOWSCHED__WORKER__LOG_SERVER_HOST": hostname,
            **({"FLOWSCHED__CORE__DAGS_FOLDER": str(dags_folder)} if dags_folder else {}),
            **(env or {}),
        }
        args = ["worker", "--nodename", nodename, "-c", str(concurrency), "--allow-root"]
        if queues:
            args += ["--queues", queues]
        process, output = self._spawn(f"worker-{name}", args, worker_env)
        worker = Worker(name, process, output, nodename, hostname, log_folder)
        self.procs.append(worker)
        if wait:
            self.wait_ready(worker)
        return worker

    def wait_ready(self, worker: Worker, timeout: float = 60) -> None:
        def ready() -> bool:
            assert worker.alive(), f"worker {worker.nodename} exited:\n{worker.text()[-3000:]}"
            return f"{worker.nodename} ready." in worker.text()

        wait_until(ready, timeout=timeout, step=0.2)

    def worker_named(self, nodename: str | None) -> Worker:
        worker = next((w for w in (self.a, self.b) if w and w.nodename == nodename), None)
        assert worker is not None, f"{nodename} is not one of the shared workers"
        return worker

    def replace(self, worker: Worker) -> Worker:
        """Start a new worker in place of ``worker`` (stopped or killed) for later tests."""
        fresh = self.start_worker(worker.name)
        if self.a is worker:
            self.a = fresh
        if self.b is worker:
            self.b = fresh
        return fresh

    def stop_all(self) -> None:
        for proc in reversed(self.procs):
            if proc.alive():
                proc.process.send_signal(signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.process.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill_tree()

    # -- DAGs and runs ----------------------------------------------------
    def write_dag(
        self,
        dag_id: str,
        body: str,
        *,
        retries: int = 0,
        retry_delay: float = 0,
        extra: str = "",
        folder: Path | None = None,
    ) -> Path:
        """A DAG file ``{dag_id}.py``; ``body`` defines tasks inside ``with DAG(...)``."""
        source = (
            "from datetime import datetime, timedelta\n"
            "from flowsched import DAG, BashOperator, PythonOperator\n"
            f"{extra}\n"
            f"with DAG({dag_id!r}, schedule=None, start_date=datetime(2026, 1, 1),\n"
            f"         default_args={{'retries': {retries},\n"
            f"                       'retry_delay': timedelta(seconds={retry_delay})}}) as dag:\n"
        )
        source += "".join(f"    {line}\n" for line in body.strip().splitlines())
        path = (folder or self.home.dags) / f"{dag_id}.py"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(source)
        return path

    def trigger(self, dag_id: str, timeout: float = 60) -> str:
        from flowsched.db.models import Dag, DagVersion
        from flowsched.discovery import fingerprint_bytes
        from flowsched.operations import trigger_dag

        wanted = fingerprint_bytes((self.home.dags / f"{dag_id}.py").read_bytes())

        def parsed() -> bool:
            with session_scope() as session:
                version = session.scalar(
                    select(DagVersion)
                    .join(Dag, Dag.latest_version_id == DagVersion.id)
                    .where(Dag.dag_id == dag_id)
                )
                return version is not None and version.fingerprint == wanted

        wait_until(parsed, timeout=timeout, step=0.2)
        return trigger_dag(dag_id, actor="test").run_id

    def wait_run(self, dag_id: str, run_id: str, timeout: float = 90) -> str:
        from flowsched.operations import get_run

        def finished() -> bool:
            with session_scope() as session:
                return get_run(session, dag_id, run_id).state in ("success", "failed")

        try:
            wait_until(finished, timeout=timeout, step=0.2)
        except AssertionError:
            raise AssertionError(
                f"run {run_id} of {dag_id} not finished:\n{self.report()}"
            ) from None
        with session_scope() as session:
            return get_run(session, dag_id, run_id).state

    def wait_state(
        self, dag_id: str, run_id: str, task_id: str, state: str, timeout: float = 60
    ) -> Any:
        """Wait for a task instance to reach ``state``; return it."""

        def reached() -> bool:
            return self.tis(dag_id, run_id)[task_id].state == state

        try:
            wait_until(reached, timeout=timeout, step=0.1)
        except AssertionError:
            raise AssertionError(f"{dag_id}.{task_id} never {state}:\n{self.report()}") from None
        return self.tis(dag_id, run_id)[task_id]

    def tis(self, dag_id: str, run_id: str) -> dict[str, Any]:
        from flowsched.operations import task_states

        return {ti.task_id: ti for ti in task_states(dag_id, run_id)}

    def tries(self, dag_id: str, run_id: str, task_id: str) -> list[Any]:
        from flowsched.db.models import TaskTry

        with session_scope() as session:
            rows = session.scalars(
                select(TaskTry)
                .where(
                    TaskTry.dag_id == dag_id,
                    TaskTry.run_id == run_id,
                    TaskTry.task_id == task_id,
                )
                .order_by(TaskTry.try_number)
            ).all()
            for row in rows:
                session.expunge(row)
            return list(rows)

    def cli_env(self) -> dict[str, str]:
        """Environment for a ``flowsched`` command run as a client of this cluster."""
        return {**os.environ, **self.home.env}

    def report(self) -> str:
        """The tail of every component's output, for failure messages."""
        return "\n".join(
            f"--- {proc.name} ({'alive' if proc.alive() else 'exited'}) ---\n{proc.text()[-2500:]}"
            for proc in self.procs
        )


def cluster_settings(redis_url: str, log_port: int) -> dict[str, dict[str, str]]:
    return {
        "core": {"executor": "celery", "secret_key": SECRET},
        "celery": {
            "broker_url": redis_url,
            "worker_concurrency": "2",
            "visibility_timeout": "3600",
        },
        "scheduler": {
            "loop_interval": "0.5",
            "dag_dir_list_interval": "1",
            "task_heartbeat_interval": "1",
            "zombie_threshold": "6",
            "task_queued_timeout": "12",
            # A lost try is re-queued once for free, then counts as a failure.
            "max_lost_tries": "1",
        },
        "worker": {"log_server_port": str(log_port), "shutdown_grace": "60"},
    }


def make_cluster(
    root: Path,
    mariadb_server: MariaDBServer,
    redis: RedisServer,
    extra: dict[str, dict[str, str]] | None = None,
) -> Cluster:
    """A migrated database and a config for a cluster on ``redis``; no process started.

    ``extra``: more settings by section (the TLS tests' certificates)."""
    from flowsched.db import migrate

    url = mariadb_server.create_database(f"d_{uuid.uuid4().hex[:12]}")
    home = Home(root / "home", url)
    cluster = Cluster(home, redis, root)
    with pytest.MonkeyPatch.context() as patch:
        for key, value in home.env.items():
            patch.setenv(key, value)
        settings = cluster_settings(redis.url, cluster.log_port)
        for section, values in (extra or {}).items():
            settings.setdefault(section, {}).update(values)
        home.configure(**settings)
        migrate.upgrade()
    reset_engine()
    set_config(None)
    return cluster


def activate(cluster: Cluster, monkeypatch: pytest.MonkeyPatch) -> None:
    """Make this test process a client of ``cluster`` (config, database, env)."""
    for key, value in cluster.home.env.items():
        monkeypatch.setenv(key, value)
    set_config(load_config(cluster.home.config_file))
    reset_engine()


@pytest.fixture(scope="session")
def shared_cluster(
    tmp_path_factory: pytest.TempPathFactory, mariadb_server: MariaDBServer
) -> Iterator[Cluster]:
    """Scheduler and workers ``a`` (127.0.0.2) and ``b`` (127.0.0.3) on their own Redis."""
    root = tmp_path_factory.mktemp("cluster")
    redis = start_redis(root / "redis")
    cluster = make_cluster(root, mariadb_server, redis)
    try:
        cluster.start_scheduler()
        cluster.a = cluster.start_worker("a", wait=False)
        cluster.b = cluster.start_worker("b", wait=False)
        cluster.wait_ready(cluster.a)
        cluster.wait_ready(cluster.b)
        yield cluster
    finally:
        cluster.stop_all()
        redis.stop()


@pytest.fixture
def cluster(shared_cluster: Cluster, monkeypatch: pytest.MonkeyPatch) -> Iterator[Cluster]:
    activate(shared_cluster, monkeypatch)
    yield shared_cluster
    reset_engine()
    set_config(None)
