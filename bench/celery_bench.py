"""The core chain and fan-out benchmarks on the Celery executor, beside raw Celery.

Starts its own MariaDB and Redis on free loopback ports, then:

* flowsched: the scheduler (in this process, CeleryExecutor) and two
  ``flowsched worker`` processes run the core benchmark's chain of N no-op
  tasks and fan-out of M no-op tasks (``bench/core_bench.py``'s DAGs);
* raw Celery: two plain Celery workers on the same Redis run the same number
  of no-op tasks, sent straight through Celery (a ``chain`` for the chain,
  M independent messages for the fan-out), with the same concurrency.

Prints tasks/s, the median and p95 time from a task's end to its
downstream's start (flowsched), and flowsched's time as a ratio of raw
Celery's. Figures are printed, never asserted.

    .venv/bin/python bench/celery_bench.py [--chain 200] [--fan 1000] [--concurrency 2]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import redis  # noqa: E402
from celery import Celery, chain  # noqa: E402

from bench import roundtrips  # noqa: E402

# The raw baseline's app: imported by its worker processes as bench.celery_bench:raw_app.
raw_app = Celery("raw", broker=os.environ.get("BENCH_BROKER_URL", "redis://127.0.0.1:6379/0"))
raw_app.conf.update(
    task_serializer="json",
    accept_content=["json"],
    task_ignore_result=True,
    task_acks_late=True,
    worker_prefetch_multiplier=1,
    task_default_queue="raw",
)


@raw_app.task(name="bench.noop")
def noop(counter: str) -> None:
    """A no-op that counts itself, so the sender knows when all are done."""
    redis.Redis.from_url(raw_app.conf.broker_url).incr(counter)


def start_processes(argv: list[str], count: int, env: dict[str, str], log: Path) -> list:
    processes = []
    for n in range(count):
        sink = (log.parent / f"{log.name}-{n}.log").open("wb")
        processes.append(
            subprocess.Popen(
                argv(n) if callable(argv) else argv,
                env=env,
                stdout=sink,
                stderr=subprocess.STDOUT,
                cwd=ROOT,
            )
        )
    return processes


def stop(processes: list) -> None:
    for process in processes:
        process.terminate()
    for process in processes:
        process.wait(60)


def wait_ready(logs: list[Path], marker: str = " ready.", timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if all(path.exists() and marker in path.read_text(errors="replace") for path in logs):
            return
        time.sleep(0.2)
    raise RuntimeError(f"workers not ready: see {logs}")


# -- raw Celery ---------------------------------------------------------------
def raw_baseline(broker_url: str, tmp: Path, concurrency: int, n_chain: int, n_fan: int) -> dict:
    env = {**os.environ, "BENCH_BROKER_URL": broker_url}
    raw_app.conf.broker_url = broker_url
    argv = lambda n: [  # noqa: E731
        sys.executable,
        "-m",
        "celery",
        "-A",
        "bench.celery_bench:raw_app",
        "worker",
        "-n",
        f"raw{n}@bench",
        "-c",
        str(concurrency),
        "-Q",
        "raw",
        "--without-gossip",
        "--without-mingle",
        "--loglevel",
        "INFO",
    ]
    workers = start_processes(argv, 2, env, tmp / "raw-worker")
    client = redis.Redis.from_url(broker_url)
    results = {}
    try:
        wait_ready([tmp / f"raw-worker-{n}.log" for n in range(2)])
        for name, count in (("chain", n_chain), ("fan", n_fan)):
            counter = f"bench:{uuid.uuid4().hex}"
            started = time.monotonic()
            if name == "chain":
                chain(*(noop.si(counter) for _ in range(count))).apply_async()
            else:
                with raw_app.producer_or_acquire() as producer:
                    for _ in range(count):
                        noop.apply_async((counter,), producer=producer)
            while int(client.get(counter) or 0) < count:
                time.sleep(0.005)
            results[name] = time.monotonic() - started
    finally:
        stop(workers)
    return results


# -- flowsched ----------------------------------------------------------------
def flowsched_runs(
    broker_url: str, db_url: str, tmp: Path, concurrency: int, n_chain: int, n_fan: int
) -> dict:
    from bench import roundtrips
    from bench.core_bench import CHAIN, FAN, run_dag
    from flowsched.celery.executor import CeleryExecutor
    from flowsched.config import load_config, set_config
    from flowsched.dag_processor import process_folder
    from flowsched.db import migrate
    from flowsched.db.engine import reset_engine

    home = tmp / "home"
    dags = home / "dags"
    dags.mkdir(parents=True)
    cfg = home / "flowsched.cfg"
    cfg.write_text(
        f"[core]\ndags_folder = {dags}\nexecutor = celery\ndags_are_paused_at_creation = false\n"
        "secret_key = bench-secret-0f2a4c6e8b1d3f5a7c9e0b2d\n"
        f"[database]\nsql_alchemy_conn = {db_url}\n"
        f"[logging]\nbase_log_folder = {home / 'logs'}\n"
        f"[scheduler]\nloop_interval = 0.5\nmax_tis_per_query = 512\n"
        f"[celery]\nbroker_url = {broker_url}\n"
    )
    env = {**os.environ, "FLOWSCHED_HOME": str(home), "FLOWSCHED_CONFIG": str(cfg)}
    os.environ.update({"FLOWSCHED_HOME": str(home), "FLOWSCHED_CONFIG": str(cfg)})
    set_config(load_config(cfg))
    reset_engine()
    migrate.upgrade()
    (dags / "chain.py").write_text(CHAIN.format(n=n_chain))
    (dags / "fan.py").write_text(FAN.format(n=n_fan))
    process_folder()

    argv = lambda n: [  # noqa: E731
        sys.executable,
        "-m",
        "flowsched",
        "worker",
        "--nodename",
        f"w{n}@127.0.0.{n + 2}",
        "-c",
        str(concurrency),
        "--allow-root",
    ]
    probe = tmp / "roundtrips"
    cpu_before = roundtrips.children_cpu_s()
    workers = []
    for n in range(2):
        worker_env = {
            **roundtrips.worker_env(env, probe),
            "FLOWSCHED_HOSTNAME": f"127.0.0.{n + 2}",
            "FLOWSCHED__WORKER__LOG_SERVER_HOST": f"127.0.0.{n + 2}",
        }
        workers += start_processes(lambda _n, n=n: argv(n), 1, worker_env, tmp / f"fs-worker{n}")
    results = {}
    try:
        wait_ready([tmp / f"fs-worker{n}-0.log" for n in range(2)])
        for dag_id, edges in (
            ("chain", [(f"t{n:04d}", f"t{n + 1:04d}") for n in range(n_chain - 1)]),
            ("fan", [("root", f"t{n:04d}") for n in range(n_fan)]),
        ):
            results[dag_id] = run_dag(dag_id, edges, CeleryExecutor(), probe)
    finally:
        stop(workers)
        reset_engine()
    # The workers' CPU (their pool processes and tries included) is known once they
    # are waited for: over both runs, idle time included.
    tries = sum(result["tasks"] for result in results.values())
    results["cpu_ms_per_try"] = (roundtrips.children_cpu_s() - cpu_before) * 1000 / max(tries, 1)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--chain", type=int, default=200)
    parser.add_argument("--fan", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=2, help="per worker (2 workers)")
    parser.add_argument("--keep", default=None, help="Keep logs and outputs in this folder.")
    args = parser.parse_args()

    from tests.servers import start_mariadb, start_redis

    with tempfile.TemporaryDirectory() as name:
        tmp = Path(args.keep or name)
        tmp.mkdir(parents=True, exist_ok=True)
        redis_server = start_redis(tmp / "redis")
        mariadb = start_mariadb(tmp / "mariadb")
        try:
            db_url = mariadb.create_database("bench")
            raw = raw_baseline(redis_server.url, tmp, args.concurrency, args.chain, args.fan)
            ours = flowsched_runs(
                redis_server.url, db_url, tmp, args.concurrency, args.chain, args.fan
            )
        finally:
            mariadb.stop()
            redis_server.stop()

    print(f"2 workers x concurrency {args.concurrency}, MariaDB + Redis on loopback")
    for dag_id, count in (("chain", args.chain), ("fan", args.fan)):
        result = ours[dag_id]
        label = f"chain of {count}" if dag_id == "chain" else f"fan-out of {count}"
        tasks = result["tasks"]
        print(
            f"[flowsched] {label}: {result['state']} in {result['seconds']:.1f}s, "
            f"{tasks / result['seconds']:.1f} tasks/s, end->downstream start median "
            f"{result['median_ms']:.0f} ms, p95 {result['p95_ms']:.0f} ms, "
            f"workers {', '.join(result['hosts'])}"
        )
        print(
            f"[raw celery] {label}: {raw[dag_id]:.2f}s, {count / raw[dag_id]:.0f} tasks/s; "
            f"flowsched/raw = {result['seconds'] / raw[dag_id]:.1f}x"
        )
        trips = roundtrips.describe(result["worker_trips"], result["worker_kinds"], tasks)
        print(f"[flowsched]   per try on the workers: {trips}")
    print(
        f"[flowsched] worker CPU per try (worker, pool and try processes, both runs): "
        f"{ours['cpu_ms_per_try']:.1f} ms"
    )


if __name__ == "__main__":
    main()
