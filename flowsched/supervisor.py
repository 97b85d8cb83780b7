"""The process side of one try: the code every executor ends up calling.

A try runs in its own process (forked by :func:`fork_and_run`), in its own
session and process group, so terminal signals aimed at the scheduler or
worker do not reach it, and everything it starts is killed with it. This
module makes that process and keeps it honest: it sends its output to the
try's log file, claims the try, heartbeats, turns SIGTERM into an
interruption, enforces the execution timeout, and records the crash of a try
process that died without a result. What runs inside (DAG file, context,
templates, execute, XCom, result, callbacks) is :mod:`flowsched.task_runner`'s.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
import threading
import traceback
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

from flowsched import secrets_masker, task_runner
from flowsched.config import get_config
from flowsched.db.engine import db_outage, is_db_outage, session_scope
from flowsched.exceptions import (
    AirflowFailException,
    FlowschedError,
    TaskTerminated,
    TaskTimeout,
)
from flowsched.hostname import get_hostname
from flowsched.lifecycle import claim_try, heartbeat_try
from flowsched.outage import EXIT_RESULT_NOT_RECORDED
from flowsched.processes import (
    DEFAULT_DEADLINE,
    become_subreaper,
    children_of,
    describe_exit,
    end_tree,
    fork_failure_hint,
    limit_hint,
    set_parent_death_signal,
)
from flowsched.state import TaskState
from flowsched.task_env import scrub_task_environment
from flowsched.task_logs.files import open_for_append, relative_log_path
from flowsched.timezone import display
from flowsched.workloads import Workload

log = logging.getLogger("flowsched.task")


class _LogFormatter(logging.Formatter):
    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        from datetime import UTC, datetime

        return display(datetime.fromtimestamp(record.created, UTC), seconds=True)


def _configure_logging(stream: Any) -> None:
    handler = logging.StreamHandler(stream)
    handler.setFormatter(_LogFormatter("[%(asctime)s] %(levelname)s - %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(get_config().logging.level)


def _redirect_output(fd: int) -> None:
    """Send this process's stdout/stderr (and its children's) to the try's log file
    (``fd``), through the masker that replaces secrets (:mod:`flowsched.secrets_masker`)."""
    secrets_masker.redirect_output(fd)


class _Heartbeat(threading.Thread):
    """Keeps the try alive in the DB; if the try was cleared or marked, stops the task."""

    def __init__(self, workload: Workload, interval: float) -> None:
        super().__init__(daemon=True, name="heartbeat")
        self.workload = workload
        self.interval = interval
        self.halt = threading.Event()
        self.lost = False

    def run(self) -> None:
        # The try runs on through a database outage: heartbeats resume when it is back.
        outage = db_outage(log)
        while not self.halt.wait(self.interval):
            try:
                with session_scope() as session:
                    alive = heartbeat_try(session, self.workload.ti_id, self.workload.try_number)
            except Exception as exc:
                if not is_db_outage(exc):
                    log.warning("heartbeat failed; retrying", exc_info=True)
                elif not outage.down:
                    outage.failed(exc)  # logged once; the task keeps running meanwhile
                continue
            outage.recovered()
            if not alive:
                self.lost = True
                log.warning("this try is no longer running in the database; stopping the task")
                os.kill(os.getpid(), signal.SIGTERM)
                return


@contextlib.contextmanager
def execution_timeout(limit: timedelta | None) -> Iterator[None]:
    """Raise :class:`TaskTimeout` in this process once ``limit`` has passed (SIGALRM)."""
    if limit is None:
        yield
        return

    def expire(*_: object) -> None:
        raise TaskTimeout(f"execution_timeout of {limit} exceeded")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, limit.total_seconds())
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def _terminate(*_: object) -> None:
    raise TaskTerminated("the task was stopped (SIGTERM)")


# A forked try notes a SIGTERM that comes before its task code runs (while it
# sets up its log and claims its row) or after it (while it records its
# result), instead of dying of it: a stop asked for by its supervisor (the
# worker's warm shutdown, or the scheduler's death) is then recorded as an
# interruption, retried without spending a retry, never as a crash.
_stop_requested = False


def _note_stop(*_: object) -> None:
    global _stop_requested
    _stop_requested = True


def _set_up_log(workload: Workload, nodename: str, *, foreground: bool) -> str | None:
    """Send output and logging to the try's log; the reason as text if that failed.

    A try whose log cannot be written (folder not writable, a symlink or a
    non-file in its place, a name too long for the file system) must still
    end with that reason on its row, where people look, rather than as a bare
    exit code: the caller claims the try and records this text as its error.
    """
    relative = relative_log_path(
        workload.dag_id, workload.run_id, workload.task_id, workload.try_number, workload.map_index
    )
    try:
        fd = open_for_append(relative)
        if foreground:
            _configure_logging(sys.stdout)
            handler = logging.StreamHandler(os.fdopen(fd, "a", buffering=1, encoding="utf-8"))
            handler.setFormatter(logging.getLogger().handlers[0].formatter)
            logging.getLogger().addHandler(handler)
            for each in logging.getLogger().handlers:
                each.addFilter(secrets_masker.MaskingFilter())
        else:
            _redirect_output(fd)
            _configure_logging(sys.stderr)
    except Exception as exc:
        _configure_logging(sys.stderr)
        error = f"cannot write the log of this try on {nodename}: {type(exc).__name__}: {exc}"
        log.error("%s: %s", workload.describe(), error)
        return error
    return None


def run_try(workload: Workload, *, nodename: str, foreground: bool = False) -> int:
    """Run one try in this process. Returns 0 when the outcome was recorded.

    The process's part: log file, claim, heartbeat, SIGTERM as an interruption;
    the task's part (load, render, execute, record) is :mod:`flowsched.task_runner`'s.
    """
    conf = get_config()
    setup_error = _set_up_log(workload, nodename, foreground=foreground)
    hostname = get_hostname()
    with session_scope() as session:
        claimed = claim_try(
            session, workload, hostname=hostname, nodename=nodename, pid=os.getpid()
        )
    if not claimed:
        log.info(
            "%s was not claimable (already taken, cleared or timed out); not running it",
            workload.describe(),
        )
        return 0
    if setup_error is not None:
        state = task_runner.fail_try(workload, setup_error)
        log.error("%s failed before running: %s -> %s", workload.describe(), setup_error, state)
        return 0
    log.info("running %s on %s (%s), pid %s", workload.describe(), nodename, hostname, os.getpid())
    previous_term = signal.signal(signal.SIGTERM, _terminate)
    heartbeat = _Heartbeat(workload, conf.scheduler.task_heartbeat_interval)
    heartbeat.start()
    success, error, rendered, interrupted = False, None, None, False
    skipped, skips, exception, force_fail = False, task_runner.NOTHING, None, False
    try:
        if _stop_requested:
            raise TaskTerminated("the task was stopped (SIGTERM) before it started")
        scrub_task_environment()  # no cluster secrets for task code (flowsched.task_env)
        success, error, rendered, skips = task_runner.execute(workload, nodename, execution_timeout)
        if error:
            log.error("%s", error)
    except task_runner.TrySkipped as exc:
        skipped, error, rendered = True, str(exc), exc.rendered
        log.info("task skipped: %s", error)
    except task_runner.TryRescheduled as exc:
        heartbeat.halt.set()
        signal.signal(signal.SIGTERM, previous_term)
        return task_runner.record_reschedule(workload, exc.reschedule_date, exc.rendered)
    except TaskTerminated as exc:
        exception = exc
        interrupted = not heartbeat.lost
        error = f"{exc}: will be retried" if interrupted else f"{exc}: stopped from outside"
        log.error("%s", error)
    except TaskTimeout as exc:
        exception, error = exc, str(exc)
        log.error("%s", error)
    except FlowschedError as exc:
        # An operator's own, explained failure (exit code, image, XCom...): no traceback.
        exception, error = exc, str(exc)
        force_fail = isinstance(exc, AirflowFailException)  # no retry (sensor timeout...)
        log.error("task failed%s: %s", " (no retry)" if force_fail else "", error)
    except BaseException as exc:
        exception, error = exc, "".join(traceback.format_exception(exc))
        log.error("task failed:\n%s", error)
    finally:
        heartbeat.halt.set()
        signal.signal(signal.SIGTERM, previous_term)
    return task_runner.record_result(
        workload,
        success,
        error,
        rendered,
        interrupted,
        skipped,
        skips,
        exception=exception,
        force_fail=force_fail,
    )


class TryNotStarted(FlowschedError):
    """The try's process could not be forked (a process or memory limit)."""


def fork_and_run(workload: Workload, *, nodename: str) -> int:
    """Run a try in a child process and wait; forward SIGTERM to it. Returns its exit code.

    The try runs in its own session (a terminal's signals aimed at us do not reach
    it) and dies with this process (parent-death signal SIGTERM: it records itself
    as interrupted). Whatever ends the try, even ``kill -9``, everything it started
    is killed before this returns, hence before a crash can be recorded and the
    try retried: its process group, and (this process being a subreaper) whatever
    it left in other sessions, such as a BashOperator's shell.
    """
    supervisor = os.getpid()
    spare = children_of(supervisor)  # before the preload: what a DAG file forks goes too
    task_runner.preload(workload)
    become_subreaper()
    try:
        pid = os.fork()
    except OSError as exc:
        raise TryNotStarted(
            f"cannot start a process for {workload.describe()}: {fork_failure_hint(exc)}"
        ) from exc
    if pid == 0:
        _run_forked_try(workload, nodename, supervisor)

    forwarded = False

    def forward(signum: int, _frame: object) -> None:
        # Once: a parent-death signal comes again for each thread of the dead parent,
        # and a second SIGTERM would kill the try while it records its interruption.
        nonlocal forwarded
        if not forwarded:
            forwarded = True
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signum)

    previous = signal.signal(signal.SIGTERM, forward)
    try:
        while True:
            try:
                # WNOWAIT: the try stays a zombie, so its pid (its group's id) cannot
                # be reused before its group is killed.
                os.waitid(os.P_PID, pid, os.WEXITED | os.WNOWAIT)
                break
            except InterruptedError:
                continue
    finally:
        signal.signal(signal.SIGTERM, previous)
    survivors = end_tree(pid, pgid=pid, spare=spare)
    if survivors:
        log.error(
            "%s: processes %s of the try survived SIGKILL for %g s (uninterruptible?)",
            workload.describe(),
            survivors,
            DEFAULT_DEADLINE,
        )
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


def _run_forked_try(workload: Workload, nodename: str, supervisor: int) -> None:
    """The child side of :func:`fork_and_run`; never returns."""
    code = 1
    try:
        os.setsid()
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, _note_stop)
        set_parent_death_signal(signal.SIGTERM, parent=supervisor)
        code = run_try(workload, nodename=nodename)
    except BaseException:
        with contextlib.suppress(Exception):
            traceback.print_exc()
    finally:
        with contextlib.suppress(Exception):
            sys.stdout.flush()
            sys.stderr.flush()
            secrets_masker.finish_output()
        if os.getppid() != supervisor:
            # Orphaned: nobody will clear our group after us. Doing it kills us too.
            os.killpg(0, signal.SIGKILL)
        os._exit(code)


def record_crash(
    workload: Workload, nodename: str, exit_code: int, reason: str | None = None
) -> None:
    """The try's process died (or could not start) without recording a result:
    record it for it, with what happened, and retry.

    Written through a database outage (with backoff), like the try's own result.
    A try process that ended but could not record its result before giving up
    on the database (:data:`EXIT_RESULT_NOT_RECORDED`) did not crash: its
    outcome is unknown here, so the try is left to the zombie sweep, which
    re-queues it as lost rather than failing a task that may have succeeded.
    """
    if exit_code == EXIT_RESULT_NOT_RECORDED:
        log.error(
            "%s: its result could not be recorded (metadata database unreachable); "
            "left to the scheduler's zombie sweep",
            workload.describe(),
        )
        return
    error = reason or (
        f"task process {describe_exit(exit_code)} on worker {nodename} before recording a "
        f"result{limit_hint(exit_code)}"
    )
    state = task_runner.fail_try(workload, error, (TaskState.RUNNING, TaskState.QUEUED))
    if state is not None:
        log.error("%s: %s -> %s", workload.describe(), error, state)
