"""At worker start-up: find the tries a previous life of this worker left ``running``.

When a worker dies (``kill -9``, OOM, reboot) and systemd starts it again
with the same nodename, the tries its old life ran are still ``running`` in
the database, but their processes are gone. Waiting for the zombie sweep
would leave them for ``[scheduler] zombie_threshold`` and then fail them;
instead the new worker looks for them at once and re-queues them without
spending a retry (:func:`flowsched.lifecycle.requeue_lost_try`): the task
did not fail, its worker did.

A try whose process is still alive on this host (the old worker's main
process was killed, but its try processes lived on) is left alone: it will
record its own result. A process id reused by an unrelated process is told
apart by its start time, which must precede the try's start.
"""

from __future__ import annotations

import logging
import os
from datetime import datetime
from functools import cache
from pathlib import Path

from sqlalchemy import select

from flowsched.config import get_config
from flowsched.db.engine import session_scope
from flowsched.db.models import TaskInstance
from flowsched.lifecycle import requeue_lost_try
from flowsched.state import TaskState

log = logging.getLogger("flowsched.worker")

# A process that started this long after the try's claim is not the try's process.
CLOCK_SLACK = 2.0


@cache
def _boot_time() -> float:
    for line in Path("/proc/stat").read_text().splitlines():
        if line.startswith("btime "):
            return float(line.split()[1])
    raise RuntimeError("/proc/stat has no btime")


def process_started_at(pid: int) -> float | None:
    """When process ``pid`` started (epoch seconds), or None if it is gone or a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()
    if fields[0] in ("Z", "X"):
        return None
    return _boot_time() + int(fields[19]) / os.sysconf("SC_CLK_TCK")


def try_process_alive(pid: int | None, started: datetime | None) -> bool:
    """Whether the try's own process still runs here (not a later process with its pid)."""
    if pid is None:
        return False
    began = process_started_at(pid)
    if began is None:
        return False
    return started is None or began <= started.timestamp() + CLOCK_SLACK


def requeue_tries_of_dead_self(nodename: str, hostname: str) -> list[str]:
    """Re-queue this worker's tries whose process is gone; their descriptions."""
    max_lost = get_config().scheduler.max_lost_tries
    requeued: list[str] = []
    with session_scope() as session:
        candidates = session.execute(
            select(
                TaskInstance.id,
                TaskInstance.try_number,
                TaskInstance.pid,
                TaskInstance.start_date,
                TaskInstance.dag_id,
                TaskInstance.task_id,
                TaskInstance.run_id,
            ).where(
                TaskInstance.state == TaskState.RUNNING.value,
                TaskInstance.worker_nodename == nodename,
                TaskInstance.hostname == hostname,
            )
        ).all()
    for ti_id, try_number, pid, started, dag_id, task_id, run_id in candidates:
        if try_process_alive(pid, started):
            continue
        reason = (
            f"lost with its worker: {nodename} restarted and the try's process (pid {pid}) was gone"
        )
        with session_scope() as session:
            state = requeue_lost_try(
                session,
                ti_id,
                try_number,
                reason=reason,
                expected_states=(TaskState.RUNNING,),
                max_lost=max_lost,
            )
        if state is not None:
            described = f"{dag_id}.{task_id} run={run_id} try={try_number}"
            log.warning("%s: %s -> %s", described, reason, state)
            requeued.append(described)
    return requeued
