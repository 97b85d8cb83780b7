"""Core benchmarks: a 200-task chain, a 1,000-task fan-out beside a task mapped over
1,000 items (dynamic task mapping: same no-op work, same run), parsing 1,000 DAG files.

Prints tasks per second and the median and p95 time from a task's end to its
downstream's start, on SQLite and on a MariaDB server started for the run.
Figures are printed, never asserted.

    .venv/bin/python bench/core_bench.py [--backend sqlite|mysql|both] [--parallelism N]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import textwrap
import time
import uuid
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sqlalchemy import select

from bench import roundtrips
from flowsched import operations
from flowsched.config import load_config, set_config
from flowsched.dag_processor import process_folder
from flowsched.db import migrate
from flowsched.db.engine import reset_engine, session_scope
from flowsched.db.models import DagRun, TaskTry
from flowsched.executors.base import BaseExecutor
from flowsched.executors.local import LocalExecutor
from flowsched.scheduler.loop import Scheduler

CHAIN = """
from datetime import datetime
from flowsched import DAG, PythonOperator

def noop():
    pass

with DAG("chain", start_date=datetime(2026, 1, 1)) as dag:
    previous = None
    for n in range({n}):
        op = PythonOperator(task_id=f"t{{n:04d}}", python_callable=noop)
        if previous is not None:
            previous >> op
        previous = op
"""

FAN = """
from datetime import datetime
from flowsched import DAG, PythonOperator

def noop():
    pass

with DAG("fan", start_date=datetime(2026, 1, 1)) as dag:
    root = PythonOperator(task_id="root", python_callable=noop)
    for n in range({n}):
        root >> PythonOperator(task_id=f"t{{n:04d}}", python_callable=noop)
"""

MAPPED = """
from datetime import datetime
from flowsched import DAG, task

with DAG("mapped", start_date=datetime(2026, 1, 1)) as dag:
    @task(task_id="root")
    def items():
        return list(range({n}))

    @task(task_id="t")
    def noop(x):
        pass

    noop.expand(x=items())
"""

SMALL = """
from datetime import datetime
from flowsched import DAG, BashOperator
with DAG("parse_{n:04d}", schedule="@daily", start_date=datetime(2026, 1, 1)) as dag:
    a = BashOperator(task_id="a", bash_command="true")
    b = BashOperator(task_id="b", bash_command="true")
    a >> b
"""


def configure(root: Path, url: str, parallelism: int) -> Path:
    dags = root / "dags"
    dags.mkdir(parents=True, exist_ok=True)
    cfg = root / "flowsched.cfg"
    cfg.write_text(
        textwrap.dedent(f"""
        [core]
        dags_folder = {dags}
        parallelism = {parallelism}
        max_map_length = 100000
        # A new DAG starts paused by default (as in Airflow): its runs would never start.
        dags_are_paused_at_creation = false
        [database]
        sql_alchemy_conn = {url}
        [logging]
        base_log_folder = {root / "logs"}
        level = WARNING
        [scheduler]
        loop_interval = 0.5
        parsing_processes = 2
        max_tis_per_query = 1024
    """)
    )
    set_config(load_config(cfg))
    reset_engine()
    migrate.upgrade()
    return dags


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def run_dag(
    dag_id: str, edges: list[tuple[str, str]], executor: BaseExecutor, probe: Path | None = None
) -> dict[str, Any]:
    """Trigger ``dag_id``, schedule it to the end, and measure each edge's latency.

    With ``probe`` (a file), also count the database round trips made outside
    this process, by the tries (bench/roundtrips.py), and the CPU time of the
    processes this one waited for (the local executor's pool and its tries).
    """
    if probe is not None:
        roundtrips.install(probe)
        probe.unlink(missing_ok=True)
    cpu_before = roundtrips.children_cpu_s()
    run = operations.trigger_dag(dag_id)
    started = time.monotonic()
    scheduler = Scheduler(executor, run_dag_processor=False)
    with scheduler:
        while True:
            with session_scope() as session:
                state = session.scalar(select(DagRun.state).where(DagRun.run_id == run.run_id))
            if state in ("success", "failed"):
                break
            if not scheduler.run_once():
                scheduler.executor.wakeup.wait(0.05)
                scheduler.executor.wakeup.clear()
    elapsed = time.monotonic() - started
    with session_scope() as session:
        tries = {
            t.task_id if t.map_index < 0 else f"{t.task_id}[{t.map_index}]": t
            for t in session.scalars(select(TaskTry).where(TaskTry.run_id == run.run_id))
        }
    worker_trips, worker_kinds = (
        roundtrips.read(probe, exclude_pid=os.getpid()) if probe else (0, Counter())
    )
    gaps = [
        (tries[down].start_date - tries[up].end_date).total_seconds() * 1000 for up, down in edges
    ]
    return {
        "state": state,
        "hosts": sorted({t.worker_nodename for t in tries.values()}),
        "tasks": len(tries),
        "seconds": elapsed,
        "tasks_per_s": len(tries) / elapsed,
        "median_ms": statistics.median(gaps),
        "p95_ms": percentile(gaps, 0.95),
        "worker_trips": worker_trips,
        "worker_kinds": worker_kinds,
        "children_cpu_s": roundtrips.children_cpu_s() - cpu_before,
    }


def per_try_line(name: str, result: dict[str, Any]) -> str:
    """Per try on the worker side: CPU ms (pool process + try) and round trips."""
    tries = result["tasks"]
    cpu = result["children_cpu_s"] * 1000 / tries
    trips = roundtrips.describe(result["worker_trips"], result["worker_kinds"], tries)
    return f"[{name}]   per try: {cpu:.1f} CPU ms (executor processes), {trips}"


def gap_figures(result: dict[str, Any], digits: int) -> str:
    """The median and p95 of a run's end->start gaps."""
    return f"median {result['median_ms']:.{digits}f} ms, p95 {result['p95_ms']:.{digits}f} ms"


def bench_backend(name: str, url: str, parallelism: int, chain: int, fan: int, files: int):
    with tempfile.TemporaryDirectory() as tmp:
        dags = configure(Path(tmp), url, parallelism)
        (dags / "chain.py").write_text(CHAIN.format(n=chain))
        (dags / "fan.py").write_text(FAN.format(n=fan))
        (dags / "mapped.py").write_text(MAPPED.format(n=fan))
        process_folder()
        probe = Path(tmp) / "roundtrips"
        for dag_id, what, edges, gap, digits in (
            (
                "chain",
                f"chain of {chain}",
                [(f"t{n:04d}", f"t{n + 1:04d}") for n in range(chain - 1)],
                "end->downstream start",
                1,
            ),
            (
                "fan",
                f"fan-out of {fan}",
                [("root", f"t{n:04d}") for n in range(fan)],
                "root end->task start",
                0,
            ),
        ):
            result = run_dag(dag_id, edges, LocalExecutor(parallelism), probe)
            print(
                f"[{name}] {what}: {result['seconds']:.1f}s, {result['tasks_per_s']:.1f} tasks/s, "
                f"{gap} {gap_figures(result, digits)}"
            )
            print(per_try_line(name, result))
        edges = [("root", f"t[{n}]") for n in range(fan)]
        mapped = run_dag("mapped", edges, LocalExecutor(parallelism), probe)
        print(
            f"[{name}] mapped over {fan} (expand from root's XCom): {mapped['seconds']:.1f}s, "
            f"{mapped['tasks_per_s']:.1f} tasks/s ({mapped['state']}) beside the fan-out's "
            f"{result['tasks_per_s']:.1f} tasks/s; root end->copy start {gap_figures(mapped, 0)}"
        )
        parse_dir = Path(tmp) / "parse"
        parse_dir.mkdir()
        for n in range(files):
            (parse_dir / f"dag_{n:04d}.py").write_text(SMALL.format(n=n))
        started = time.monotonic()
        report = process_folder(parse_dir)
        elapsed = time.monotonic() - started
        print(
            f"[{name}] parsing {files} DAG files: {elapsed:.1f}s "
            f"({files / elapsed:.0f} files/s, {len(report.errors)} errors)"
        )
        reset_engine()


def on_backends(choice: str, bench: Callable[[str, str, Path], None]) -> None:
    """``bench(name, url, folder)`` on SQLite and/or on a MariaDB started for it
    (``choice``: sqlite, mysql or both); ``folder`` is a scratch folder."""
    if choice in ("sqlite", "both"):
        with tempfile.TemporaryDirectory() as tmp:
            bench("sqlite", f"sqlite:///{tmp}/bench.db", Path(tmp))
    if choice in ("mysql", "both"):
        from tests.servers import start_mariadb

        with tempfile.TemporaryDirectory() as tmp:
            server = start_mariadb(Path(tmp) / "mariadb")
            try:
                url = server.create_database(f"bench_{uuid.uuid4().hex[:8]}")
                bench("mariadb", url, Path(tmp))
            finally:
                server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--backend", choices=["sqlite", "mysql", "both"], default="both")
    parser.add_argument("--parallelism", type=int, default=4)
    parser.add_argument("--chain", type=int, default=200)
    parser.add_argument("--fan", type=int, default=1000)
    parser.add_argument("--files", type=int, default=1000)
    args = parser.parse_args()
    sizes = (args.parallelism, args.chain, args.fan, args.files)
    on_backends(args.backend, lambda name, url, _folder: bench_backend(name, url, *sizes))


if __name__ == "__main__":
    main()
