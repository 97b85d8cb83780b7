"""What a worker does with one message: check it, run the try in its own process.

The message body is a :class:`~flowsched.lifecycle.Workload` as a JSON dict.
Anything that is not one is dropped with a log line (acking it: redelivering
a message that can never be read would only loop). A well-formed message is
checked against its task instance row before forking, so a duplicate or
stale delivery costs one SELECT, and a message whose ids do not match the row
it names is refused rather than allowed to run another task's code.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from flowsched.db.engine import db_outage, session_scope, with_db_retry
from flowsched.db.models import TaskInstance
from flowsched.state import TaskState
from flowsched.workloads import Workload

log = logging.getLogger("flowsched.worker")


def parse_workload(body: Any) -> Workload | None:
    """The workload in a message body, or None (logged) when it is not one."""
    if not isinstance(body, dict):
        log.error("dropping malformed message: expected a JSON object, got %.200r", body)
        return None
    try:
        return Workload.from_dict(body)
    except (ValueError, TypeError) as exc:
        log.error("dropping malformed message %.200r: %s", body, exc)
        return None


def refusal(workload: Workload) -> str | None:
    """Why this message must not run (unknown, mismatched or stale), or None to run it."""
    with session_scope() as session:
        ti = session.get(TaskInstance, workload.ti_id)
        if ti is None:
            return f"unknown task instance {workload.ti_id} ({workload.describe()})"
        named = (workload.dag_id, workload.task_id, workload.run_id)
        if named != (ti.dag_id, ti.task_id, ti.run_id):
            return (
                f"message names {workload.describe()} but task instance {ti.id} is "
                f"{ti.dag_id}.{ti.task_id} run={ti.run_id}"
            )
        if ti.try_number != workload.try_number or ti.state != TaskState.QUEUED.value:
            return (
                f"stale message for {workload.describe()}: the task is now {ti.state} "
                f"at try {ti.try_number} (duplicate delivery or already retried)"
            )
    return None


def run_workload(task: Any, body: Any = None) -> None:
    """The Celery task: one message, one try, one forked process."""
    from flowsched.supervisor import TryNotStarted, fork_and_run, record_crash

    workload = parse_workload(body)
    if workload is None:
        return
    # A message delivered while the database is down waits for it (the worker slot
    # with it) rather than fail: the try is still queued and must run once.
    reason = with_db_retry(lambda: refusal(workload), db_outage(log))
    if reason is not None:
        log.warning("not running: %s", reason)
        return
    nodename = task.request.hostname or "unknown-worker"
    try:
        code = fork_and_run(workload, nodename=nodename)
    except TryNotStarted as exc:
        record_crash(workload, nodename, 1, reason=f"{exc} on worker {nodename}")
        return
    if code != 0:
        record_crash(workload, nodename, code)
    _exit_if_orphaned()


# The pid of the worker's main process, set in each pool process (worker/start.py).
worker_main_pid: int | None = None


def _exit_if_orphaned() -> None:
    """A pool process whose worker died (kill -9) ends with its try: nobody will read its
    result, and Celery's pool would otherwise wait 30 s for the dead main process."""
    if worker_main_pid is not None and os.getppid() != worker_main_pid:
        log.warning(
            "the worker's main process %s is gone: this pool process exits", worker_main_pid
        )
        logging.shutdown()
        os._exit(0)
