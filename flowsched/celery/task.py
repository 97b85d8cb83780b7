"""What a worker does with one message: check it, run the try in its own process.

The message body is a :class:`~flowsched.lifecycle.Workload` as a JSON dict.
Anything that is not one is dropped with a log line (acking it: redelivering
a message that can never be read would only loop). A well-formed message is
forked at once: the try's claim (:func:`flowsched.lifecycle.claim_try`) is one
conditional UPDATE naming its ids, try number and state, so a duplicate or
stale delivery, or a message whose ids do not match the row it names, claims
nothing and never runs (logged as "not running: <reason>"). No read comes
before it: a message that runs costs no SELECT.
"""

from __future__ import annotations

import logging
import os
from typing import Any

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


def run_workload(task: Any, body: Any = None) -> None:
    """The Celery task: one message, one try, one forked process."""
    from flowsched.supervisor import TryNotStarted, fork_and_run, record_crash

    workload = parse_workload(body)
    if workload is None:
        return
    nodename = task.request.hostname or "unknown-worker"
    try:
        ended = fork_and_run(workload, nodename=nodename)
    except TryNotStarted as exc:
        reason = f"{exc} on worker {nodename}"
        record_crash(workload, nodename, 1, reason=reason, claimed=False)
        return
    if ended.code != 0:
        record_crash(workload, nodename, ended.code, claimed=ended.claimed)
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
