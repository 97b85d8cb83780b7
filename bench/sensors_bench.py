"""1,000 sensors in reschedule mode waiting at once on the Celery executor (2 workers x
concurrency 2 = 4 worker slots): do they starve other tasks?

Starts its own MariaDB and Redis on free loopback ports, the scheduler in this
process (CeleryExecutor) and two ``flowsched worker`` processes, then:

1. baseline: a chain of ``--others`` no-op tasks runs alone;
2. ``--sensors`` PythonSensors (mode="reschedule", ``--poke-interval`` s) start
   waiting for a file that does not exist yet; once every one has poked and
   given its slot back (``up_for_reschedule``), the same chain runs again
   beside them;
3. the file appears and the sensors finish.

Prints, for the chain alone and beside the waiting sensors, the time each of its
tasks waited (from its upstream's end, or the run's start, to its own start:
median, p95, max) and the chain's total time. In mode="poke" the sensors would
hold all 4 slots and the chain would never start; the figures show what waiting
in reschedule mode costs others. Figures are printed, never asserted.

    .venv/bin/python bench/sensors_bench.py [--sensors 1000] [--others 20] [--poke-interval 30]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.celery_bench import start_processes, stop, wait_ready  # noqa: E402
from bench.core_bench import percentile  # noqa: E402

SENSORS = """
import os
from datetime import datetime
from flowsched import DAG, PythonSensor

with DAG("sensors", schedule=None, start_date=datetime(2026, 1, 1)) as dag:
    for n in range({n}):
        PythonSensor(task_id=f"s{{n:04d}}", python_callable=os.path.exists,
                     op_args=[{flag!r}], mode="reschedule", poke_interval={poke},
                     timeout=3600)
"""

OTHERS = """
from datetime import datetime
from flowsched import DAG, PythonOperator

def noop():
    pass

with DAG("others", schedule=None, start_date=datetime(2026, 1, 1)) as dag:
    previous = None
    for n in range({n}):
        task = PythonOperator(task_id=f"t{{n:04d}}", python_callable=noop)
        if previous is not None:
            previous >> task
        previous = task
"""


def drive(scheduler: Any, done: Any, timeout: float, what: str) -> float:
    """Run scheduler passes until ``done()``; the seconds it took."""
    started = time.monotonic()
    last_check = 0.0
    while True:
        if time.monotonic() - last_check > 0.5:
            last_check = time.monotonic()
            if done():
                return time.monotonic() - started
        if time.monotonic() - started > timeout:
            raise RuntimeError(f"{what}: not done within {timeout:.0f}s")
        if not scheduler.run_once():
            scheduler.executor.wakeup.wait(0.05)
            scheduler.executor.wakeup.clear()


def run_state(run_id: str) -> str | None:
    from sqlalchemy import select

    from flowsched.db.engine import session_scope
    from flowsched.db.models import DagRun

    with session_scope(read_only=True) as session:
        return session.scalar(select(DagRun.state).where(DagRun.run_id == run_id))


def sensors_all_waiting(run_id: str, count: int) -> bool:
    """Every sensor has poked once and given its slot back (a task_reschedule row)."""
    from sqlalchemy import func, select

    from flowsched.db.engine import session_scope
    from flowsched.db.models import TaskReschedule

    with session_scope(read_only=True) as session:
        poked = session.scalar(
            select(func.count(func.distinct(TaskReschedule.task_id))).where(
                TaskReschedule.run_id == run_id
            )
        )
    return poked >= count


def chain_waits(run_id: str, n: int) -> tuple[list[float], float]:
    """Seconds each chain task waited to start, and the chain's total time."""
    from sqlalchemy import select

    from flowsched.db.engine import session_scope
    from flowsched.db.models import DagRun, TaskTry

    with session_scope(read_only=True) as session:
        run = session.scalar(select(DagRun).where(DagRun.run_id == run_id))
        tries = {
            t.task_id: t for t in session.scalars(select(TaskTry).where(TaskTry.run_id == run_id))
        }
        waits = []
        for k in range(n):
            ready = run.start_date if k == 0 else tries[f"t{k - 1:04d}"].end_date
            waits.append((tries[f"t{k:04d}"].start_date - ready).total_seconds())
        total = (tries[f"t{n - 1:04d}"].end_date - run.start_date).total_seconds()
    return waits, total


def run_chain(scheduler: Any, n: int, label: str) -> tuple[list[float], float]:
    from flowsched import operations

    run = operations.trigger_dag("others", run_id=f"others_{label}")
    drive(scheduler, lambda: run_state(run.run_id) in ("success", "failed"), 1800, label)
    assert run_state(run.run_id) == "success", f"{label}: chain run {run_state(run.run_id)}"
    return chain_waits(run.run_id, n)


def bench(tmp: Path, broker_url: str, db_url: str, args: argparse.Namespace) -> dict[str, Any]:
    from flowsched import operations
    from flowsched.celery.executor import CeleryExecutor
    from flowsched.config import load_config, set_config
    from flowsched.dag_processor import process_folder
    from flowsched.db import migrate
    from flowsched.db.engine import reset_engine
    from flowsched.scheduler.loop import Scheduler

    home = tmp / "home"
    dags = home / "dags"
    dags.mkdir(parents=True)
    flag = tmp / "release-the-sensors"
    cfg = home / "flowsched.cfg"
    cfg.write_text(
        f"[core]\ndags_folder = {dags}\nexecutor = celery\ndags_are_paused_at_creation = false\n"
        "secret_key = bench-secret-0f2a4c6e8b1d3f5a7c9e0b2d\n"
        f"[database]\nsql_alchemy_conn = {db_url}\n"
        f"[logging]\nbase_log_folder = {home / 'logs'}\n"
        "[scheduler]\nloop_interval = 0.5\nmax_tis_per_query = 512\n"
        f"[celery]\nbroker_url = {broker_url}\n"
    )
    env = {**os.environ, "FLOWSCHED_HOME": str(home), "FLOWSCHED_CONFIG": str(cfg)}
    os.environ.update({"FLOWSCHED_HOME": str(home), "FLOWSCHED_CONFIG": str(cfg)})
    set_config(load_config(cfg))
    reset_engine()
    migrate.upgrade()
    (dags / "sensors.py").write_text(
        SENSORS.format(n=args.sensors, flag=str(flag), poke=args.poke_interval)
    )
    (dags / "others.py").write_text(OTHERS.format(n=args.others))
    report = process_folder()
    assert not report.errors, report.errors

    workers = []
    for n in range(2):
        worker_env = {
            **env,
            "FLOWSCHED_HOSTNAME": f"127.0.0.{n + 2}",
            "FLOWSCHED__WORKER__LOG_SERVER_HOST": f"127.0.0.{n + 2}",
        }
        argv = [
            *(sys.executable, "-m", "flowsched", "worker"),
            *("--nodename", f"w{n}@127.0.0.{n + 2}", "-c", "2", "--allow-root"),
        ]
        workers += start_processes(argv, 1, worker_env, tmp / f"worker{n}")
    results: dict[str, Any] = {}
    try:
        wait_ready([tmp / f"worker{n}-0.log" for n in range(2)])
        with Scheduler(CeleryExecutor(), run_dag_processor=False) as scheduler:
            results["alone"] = run_chain(scheduler, args.others, "alone")
            sensors = operations.trigger_dag("sensors", run_id="sensors")
            results["all_waiting_s"] = drive(
                scheduler,
                lambda: sensors_all_waiting(sensors.run_id, args.sensors),
                3600,
                "sensors' first pokes",
            )
            results["beside"] = run_chain(scheduler, args.others, "beside_sensors")
            flag.touch()
            results["release_s"] = drive(
                scheduler,
                lambda: run_state(sensors.run_id) in ("success", "failed"),
                3600,
                "sensors' release",
            )
            results["sensors_state"] = run_state(sensors.run_id)
    finally:
        stop(workers)
        reset_engine()
    return results


def describe(waits: list[float]) -> str:
    return (
        f"median {statistics.median(waits) * 1000:.0f} ms, "
        f"p95 {percentile(waits, 0.95) * 1000:.0f} ms, max {max(waits) * 1000:.0f} ms"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sensors", type=int, default=1000)
    parser.add_argument("--others", type=int, default=20)
    parser.add_argument("--poke-interval", type=float, default=30)
    parser.add_argument("--keep", default=None, help="Keep logs and outputs in this folder.")
    args = parser.parse_args()

    from tests.servers import start_mariadb, start_redis

    with tempfile.TemporaryDirectory() as name:
        tmp = Path(args.keep or name)
        tmp.mkdir(parents=True, exist_ok=True)
        redis_server = start_redis(tmp / "redis")
        mariadb = start_mariadb(tmp / "mariadb")
        try:
            results = bench(tmp, redis_server.url, mariadb.create_database("bench"), args)
        finally:
            mariadb.stop()
            redis_server.stop()

    print(
        f"2 workers x concurrency 2 (4 slots), MariaDB + Redis on loopback; "
        f"{args.sensors} PythonSensors, mode=reschedule, poke_interval {args.poke_interval:g}s"
    )
    print(f"all {args.sensors} sensors poked once and waiting: {results['all_waiting_s']:.1f}s")
    for key, label in (("alone", "alone (baseline)"), ("beside", "beside the sensors")):
        waits, total = results[key]
        print(
            f"chain of {args.others} no-op tasks {label}: {total:.1f}s in all; "
            f"each task waited {describe(waits)}"
        )
    print(
        f"sensors released: run {results['sensors_state']} "
        f"{results['release_s']:.1f}s after the file appeared"
    )


if __name__ == "__main__":
    main()
