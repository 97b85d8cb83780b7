"""The scheduler alone: how fast it schedules and records tries, and how its
pass time grows with the history in the database.

An instant executor (``InstantExecutor``, bench-only) completes each try the
moment it is queued: claimed and recorded successful through
:mod:`flowsched.lifecycle`, as a runner would, but with no process, no fork and
no task code. What is left is the scheduler's own work.

* a fan-out of N tasks (10,000 by default): tries per second, with the time
  the executor spent recording the tries shown apart, and the database round
  trips per try of the scheduler (bench/roundtrips.py);
* pass time as history grows: finished task instances (with their runs and
  try rows) are bulk-inserted up to 10k, 100k and 1M; at each size, the median
  time of an idle pass and of the passes that run a 1,000-task fan-out.

Figures are printed, never asserted.

    .venv/bin/python bench/scheduler_bench.py [--backend sqlite|mysql|both]
        [--fan 10000] [--history 10000,100000,1000000] [--slots 512]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from datetime import timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sqlalchemy import func, insert, select, update

from bench import roundtrips
from bench.core_bench import FAN, configure, on_backends
from flowsched import operations
from flowsched.dag_processor import process_folder
from flowsched.db.engine import reset_engine, session_scope
from flowsched.db.models import DagRun, Pool, TaskInstance, TaskTry
from flowsched.executors.base import BaseExecutor, ExecutorEvent
from flowsched.lifecycle import claim_try, finish_try
from flowsched.scheduler.loop import Scheduler
from flowsched.timezone import utcnow
from flowsched.workloads import Workload

HISTORY_TASKS_PER_RUN = 100
HISTORY_DAG = "small"


class InstantExecutor(BaseExecutor):
    """Bench-only: every queued try is claimed and recorded successful at the next sync.

    The writes are the runner's (claim_try, finish_try), batched in one
    transaction per sync; their time is kept in ``busy_s`` so the benchmark can
    show the scheduler's share apart.
    """

    name = "instant"

    def __init__(self, slots: int) -> None:
        super().__init__()
        self.slots = slots
        self.pending: list[Workload] = []
        self.busy_s = 0.0
        self.completed = 0

    def queue(self, workload: Workload) -> None:
        self.pending.append(workload)

    def slots_available(self) -> int:
        return self.slots - len(self.pending)

    def sync(self) -> list[ExecutorEvent]:
        if not self.pending:
            return []
        started = time.monotonic()
        with session_scope() as session:
            for workload in self.pending:
                claimed = claim_try(session, workload, hostname="bench", nodename="bench", pid=1)
                if claimed:
                    # As the runner records a success of a task without dataset outlets.
                    finish_try(
                        session,
                        workload.ti_id,
                        workload.try_number,
                        success=True,
                        started=claimed,
                        outlets=False,
                    )
                    self.completed += 1
        self.pending = []
        self.busy_s += time.monotonic() - started
        self.wakeup.set()
        return []


def run_to_end(dag_id: str, run_id: str, executor: InstantExecutor, timeout: float) -> list[float]:
    """Drive a fresh scheduler until the run ends; the duration of each pass."""
    passes: list[float] = []
    deadline = time.monotonic() + timeout
    with Scheduler(executor, run_dag_processor=False) as scheduler:
        while time.monotonic() < deadline:
            with session_scope(read_only=True) as session:
                state = session.scalar(
                    select(DagRun.state).where(DagRun.dag_id == dag_id, DagRun.run_id == run_id)
                )
            if state in ("success", "failed"):
                return passes
            started = time.monotonic()
            scheduler.run_once()
            passes.append(time.monotonic() - started)
    raise TimeoutError(f"run {run_id} did not end within {timeout:g} s")


def idle_passes(executor: InstantExecutor, count: int) -> list[float]:
    passes = []
    with Scheduler(executor, run_dag_processor=False) as scheduler:
        for _ in range(count):
            started = time.monotonic()
            scheduler.run_once()
            passes.append(time.monotonic() - started)
    return passes


def seed_history(start: int, stop: int, dag_id: str = HISTORY_DAG) -> None:
    """Bulk-insert finished runs, task instances and tries numbered [start, stop), as
    the history of ``dag_id`` (the DAG whose passes are timed: its own history is
    what a pass could trip over)."""
    now = utcnow()
    chunk = 20_000
    for first in range(start, stop, chunk):
        last = min(stop, first + chunk)
        runs = range(first // HISTORY_TASKS_PER_RUN, (last - 1) // HISTORY_TASKS_PER_RUN + 1)
        with session_scope() as session:
            known = set(
                session.scalars(
                    select(DagRun.run_id).where(
                        DagRun.dag_id == dag_id,
                        DagRun.run_id.in_([f"h{n}" for n in runs]),
                    )
                )
            )
            session.execute(
                insert(DagRun),
                [
                    {
                        "dag_id": dag_id,
                        "run_id": f"h{n}",
                        "run_type": "manual",
                        "state": "success",
                        "logical_date": now - timedelta(minutes=n),
                        "created_at": now,
                        "start_date": now,
                        "end_date": now,
                    }
                    for n in runs
                    if f"h{n}" not in known
                ],
            )
            run_ids = dict(
                session.execute(
                    select(DagRun.run_id, DagRun.id).where(
                        DagRun.dag_id == dag_id,
                        DagRun.run_id.in_([f"h{n}" for n in runs]),
                    )
                ).all()
            )
            rows = [
                {
                    "dag_run_id": run_ids[f"h{n // HISTORY_TASKS_PER_RUN}"],
                    "dag_id": dag_id,
                    "run_id": f"h{n // HISTORY_TASKS_PER_RUN}",
                    "task_id": f"t{n % HISTORY_TASKS_PER_RUN}",
                    "state": "success",
                    "try_number": 1,
                    "max_tries": 0,
                    "pool": "default_pool",
                    "priority_weight": 1,
                    "start_date": now,
                    "end_date": now,
                    "duration": 0.0,
                }
                for n in range(first, last)
            ]
            session.execute(insert(TaskInstance), rows)
            ti_ids = session.execute(
                select(TaskInstance.id, TaskInstance.run_id, TaskInstance.task_id).where(
                    TaskInstance.dag_id == dag_id,
                    TaskInstance.dag_run_id.in_(list(run_ids.values())),
                    TaskInstance.id.not_in(select(TaskTry.task_instance_id)),
                )
            ).all()
            session.execute(
                insert(TaskTry),
                [
                    {
                        "task_instance_id": ti_id,
                        "dag_id": dag_id,
                        "run_id": run_id,
                        "task_id": task_id,
                        "try_number": 1,
                        "state": "success",
                        "start_date": now,
                        "end_date": now,
                        "duration": 0.0,
                    }
                    for ti_id, run_id, task_id in ti_ids
                ],
            )


def ms(values: list[float]) -> str:
    return f"median {statistics.median(values) * 1000:.1f} ms, max {max(values) * 1000:.1f} ms"


def bench_backend(name: str, url: str, args: argparse.Namespace, tmp: Path) -> None:
    dags = configure(tmp, url, args.slots)
    fan = FAN.replace('"fan", start_date', '"fan", max_active_tasks=1000000, start_date')
    (dags / "fan.py").write_text(fan.format(n=args.fan))
    (dags / "small.py").write_text(fan.replace('"fan"', '"small"').format(n=args.small))
    process_folder()
    with session_scope() as session:
        session.execute(update(Pool).values(slots=1_000_000))
    counts = tmp / "roundtrips"
    roundtrips.install(counts)

    executor = InstantExecutor(args.slots)
    run = operations.trigger_dag("fan")
    counts.unlink(missing_ok=True)
    started = time.monotonic()
    passes = run_to_end("fan", run.run_id, executor, timeout=3600)
    elapsed = time.monotonic() - started
    tries = executor.completed
    total, kinds = roundtrips.read(counts)
    own = elapsed - executor.busy_s
    print(
        f"[{name}] scheduler, fan-out of {args.fan} (instant executor, {args.slots} slots): "
        f"{tries} tries in {elapsed:.1f}s = {tries / elapsed:.0f} tries/s scheduled and "
        f"recorded; without the executor's recording ({executor.busy_s:.1f}s) "
        f"{tries / own:.0f} tries/s; {len(passes)} passes, {ms(passes)}"
    )
    print(f"[{name}]   {roundtrips.describe(total, kinds, tries)} (scheduler + recording)")

    seeded = 0
    for size in args.history:
        before = time.monotonic()
        seed_history(seeded, size)
        seeded = size
        with session_scope(read_only=True) as session:
            finished = session.scalar(select(func.count()).select_from(TaskInstance))
        seeding = time.monotonic() - before
        idle = idle_passes(InstantExecutor(args.slots), 30)
        executor = InstantExecutor(args.slots)
        run = operations.trigger_dag("small")
        started = time.monotonic()
        busy = run_to_end("small", run.run_id, executor, timeout=3600)
        elapsed = time.monotonic() - started
        print(
            f"[{name}] history {finished:>9,} task instances (seeded in {seeding:.0f}s): "
            f"idle pass {ms(idle)}; fan-out of {args.small}: {len(busy)} passes, {ms(busy)}, "
            f"{executor.completed / elapsed:.0f} tries/s"
        )
    reset_engine()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--backend", choices=["sqlite", "mysql", "both"], default="sqlite")
    parser.add_argument("--fan", type=int, default=10_000)
    parser.add_argument("--small", type=int, default=1_000, help="fan-out run at each history")
    parser.add_argument(
        "--history",
        type=lambda text: [int(part) for part in text.split(",")],
        default=[10_000, 100_000, 1_000_000],
        help="finished task instances to reach, comma-separated",
    )
    parser.add_argument("--slots", type=int, default=512, help="executor slots (parallelism)")
    args = parser.parse_args()
    on_backends(args.backend, lambda name, url, folder: bench_backend(name, url, args, folder))


if __name__ == "__main__":
    main()
