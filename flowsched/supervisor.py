"""The process side of one try: the code every executor ends up calling.

A try runs in its own process (forked by :func:`fork_and_run`), in its own
session and process group, so terminal signals aimed at the scheduler or
worker do not reach it, and everything it starts is killed with it. This
module makes that process and keeps it honest: it sends its output to the
try's log file, claims the try, heartbeats, turns SIGTERM into an
interruption, enforces the execution timeout, and records the crash of a try
process that died without a result.

Per try the database sees two writes: the claim (one conditional UPDATE that
also refuses a duplicate, stale or mismatched message, the run's fields
coming with the workload) and the result. The heartbeat is the supervisor's,
not the try's: the process that forked the try waits for it with a timeout
and heartbeats only once the try has outlived ``task_heartbeat_interval``, so
a short try starts no thread and sends no heartbeat. What runs inside (DAG file, context,
templates, execute, XCom, result, callbacks) is :mod:`flowsched.task_runner`'s.
"""

from __future__ import annotations

import contextlib
import logging
import mmap
import os
import select
import signal
import sys
import threading
import traceback
from collections.abc import Iterator
from datetime import timedelta
from typing import Any, NamedTuple

from flowsched import secrets_masker, task_runner
from flowsched.config import get_config
from flowsched.db.engine import (
    db_outage,
    for_a_try_process,
    handing_over,
    is_db_outage,
    open_connection_for_next_try,
    session_scope,
    with_db_retry,
)
from flowsched.exceptions import (
    AirflowFailException,
    FlowschedError,
    TaskTerminated,
    TaskTimeout,
)
from flowsched.hostname import get_hostname
from flowsched.lifecycle import claim_refusal, claim_try, heartbeat_try
from flowsched.outage import EXIT_RESULT_NOT_RECORDED, Outage
from flowsched.processes import (
    DEFAULT_DEADLINE,
    become_subreaper,
    children_of,
    describe_exit,
    end_tree,
    fork_failure_hint,
    has_children,
    limit_hint,
    set_parent_death_signal,
)
from flowsched.state import TaskState
from flowsched.task_env import scrub_task_environment
from flowsched.task_logs.files import open_for_append, relative_log_path
from flowsched.timezone import display
from flowsched.workloads import RECORDED, Workload

log = logging.getLogger("flowsched.task")
worker_log = logging.getLogger("flowsched.worker")


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


class TryFlags:
    """What a try's process and its supervisor share (an anonymous mapping made
    before the fork): whether the try claimed its row, whether its task code is
    running (not yet recording its result), whether its result is recorded, and
    whether the supervisor found the try gone from the database (cleared,
    marked, timed out) and stopped it."""

    _CLAIMED, _RUNNING, _RECORDING, _RECORDED = 1, 2, 3, 4

    def __init__(self) -> None:
        self._map = mmap.mmap(-1, 2)

    @property
    def claimed(self) -> bool:
        return self._map[0] != 0

    def set_claimed(self) -> None:
        self._map[0] = self._CLAIMED

    @property
    def running(self) -> bool:
        return self._map[0] == self._RUNNING

    def set_running(self, running: bool) -> None:
        self._map[0] = self._RUNNING if running else self._RECORDING

    @property
    def recorded(self) -> bool:
        return self._map[0] == self._RECORDED

    def set_recorded(self) -> None:
        self._map[0] = self._RECORDED

    @property
    def lost(self) -> bool:
        return self._map[1] == 1

    def set_lost(self) -> None:
        self._map[1] = 1


def _beat(workload: Workload, outage: Outage) -> bool | None:
    """One heartbeat: whether the try is still running in the database, None if the
    database could not say (an outage, logged once: the try keeps running meanwhile)."""
    try:
        with session_scope() as session:
            alive = heartbeat_try(session, workload.ti_id, workload.try_number)
    except Exception as exc:
        if not is_db_outage(exc):
            log.warning("heartbeat failed; retrying", exc_info=True)
        elif not outage.down:
            outage.failed(exc)
        return None
    outage.recovered()
    return alive


class _Heartbeat(threading.Thread):
    """The heartbeat of a foreground try (``tasks run``), which has no supervisor."""

    def __init__(self, workload: Workload, interval: float, flags: TryFlags) -> None:
        super().__init__(daemon=True, name="heartbeat")
        self.workload = workload
        self.interval = interval
        self.flags = flags
        self.halt = threading.Event()

    def run(self) -> None:
        outage = db_outage(log)
        while not self.halt.wait(self.interval):
            if _beat(self.workload, outage) is False:
                self.flags.set_lost()
                log.warning("this try is no longer running in the database; stopping the task")
                os.kill(os.getpid(), signal.SIGTERM)
                return


def _wait_and_beat(pid: int, workload: Workload, flags: TryFlags) -> None:
    """Wait for the try's process to end (it stays a zombie), heartbeating for it each
    ``task_heartbeat_interval`` while it lives; a try gone from the database (cleared,
    marked, timed out) while its task code runs is stopped with SIGTERM, flagged as lost.

    The beats go on after the task code, while the try records its result: a result
    retried through a database outage is then not taken for a zombie once the
    database is back (the first beat refreshes the try), however long the write
    itself takes to get through on a loaded machine."""
    interval_ms = max(1, int(get_config().scheduler.task_heartbeat_interval * 1000))
    outage: Outage | None = None
    pidfd = os.pidfd_open(pid)
    try:
        poller = select.poll()
        poller.register(pidfd, select.POLLIN)
        while not poller.poll(interval_ms):  # readable once the process has ended
            if flags.lost:
                continue
            outage = outage or db_outage(log)
            # flags.running is re-read after the UPDATE: a try that is not running in the
            # database because it has just recorded its own result (or not yet claimed)
            # is not lost.
            if _beat(workload, outage) is False and flags.running:
                flags.set_lost()
                worker_log.warning(
                    "%s is no longer running in the database; stopping it", workload.describe()
                )
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGTERM)
    finally:
        os.close(pidfd)
    while True:
        try:
            # WNOWAIT: the try stays a zombie, so its pid (its group's id) cannot
            # be reused before its group is killed.
            os.waitid(os.P_PID, pid, os.WEXITED | os.WNOWAIT)
            return
        except InterruptedError:
            continue


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


def _claim(workload: Workload, nodename: str) -> Any:
    """Claim the try (through a database outage); its start time, or None, logged in the
    worker's log with the reason, when the message must not run (duplicate, stale,
    unknown or mismatched): before the try's log is opened, which is another try's."""
    hostname = get_hostname()

    def claim() -> Any:
        with session_scope() as session:
            return claim_try(
                session,
                workload,
                hostname=hostname,
                nodename=nodename,
                pid=os.getpid(),
                commit=True,
            )

    # A message delivered while the database is down waits for it (the worker slot
    # with it) rather than fail: the try is still queued and must run once.
    started = with_db_retry(claim, db_outage(worker_log))
    if started is None:
        try:
            with session_scope(read_only=True) as session:
                reason = claim_refusal(session, workload)
        except Exception as exc:
            reason = f"{workload.describe()} is not claimable ({type(exc).__name__}: {exc})"
        worker_log.warning("not running: %s", reason)
    return started


# A pipe the process that forks tries may hand down (the LocalExecutor's pool, see
# :func:`announce_results_to`): a try writes its key (ti id, try number) to it once its
# result is committed and its output flushed to its log, so the scheduler's next pass
# (and whoever reads that log) starts then, not once this process
# has exited, been reaped and been reported by its pool process (the hop to a
# downstream task).
_results_fd: int | None = None


def announce_results_to(fd: int | None) -> None:
    """Have the tries this process forks write their key to ``fd`` (non-blocking: with
    the pipe full it is dropped, and the pool process's report says the same later)
    once their result is recorded."""
    global _results_fd
    _results_fd = fd


def _announce_result(workload: Workload) -> None:
    if _results_fd is not None:
        with contextlib.suppress(OSError):
            os.write(_results_fd, RECORDED.pack(workload.ti_id, workload.try_number))


def run_try(
    workload: Workload, *, nodename: str, foreground: bool = False, flags: TryFlags | None = None
) -> int:
    """Run one try in this process. Returns 0 when the outcome was recorded.

    The process's part: claim, log file, SIGTERM as an interruption (the
    heartbeat is the supervisor's, see :func:`fork_and_run`, or a thread's in
    the foreground); the task's part (load, render, execute, record) is
    :mod:`flowsched.task_runner`'s.
    """
    conf = get_config()
    flags = flags or TryFlags()
    started = _claim(workload, nodename)
    if started is None:
        return 0
    flags.set_claimed()
    setup_error = _set_up_log(workload, nodename, foreground=foreground)
    hostname = get_hostname()
    if setup_error is not None:
        state = task_runner.fail_try(workload, setup_error)
        log.error("%s failed before running: %s -> %s", workload.describe(), setup_error, state)
        return 0
    log.info("running %s on %s (%s), pid %s", workload.describe(), nodename, hostname, os.getpid())
    previous_term = signal.signal(signal.SIGTERM, _terminate)
    heartbeat = None
    if foreground:
        heartbeat = _Heartbeat(workload, conf.scheduler.task_heartbeat_interval, flags)
        heartbeat.start()
    flags.set_running(True)
    success, error, rendered, interrupted = False, None, None, False
    skipped, skips, exception, force_fail = False, task_runner.NOTHING, None, False
    outlets = True
    try:
        if _stop_requested:
            raise TaskTerminated("the task was stopped (SIGTERM) before it started")
        scrub_task_environment()  # no cluster secrets for task code (flowsched.task_env)
        success, error, rendered, skips, outlets = task_runner.execute(
            workload, nodename, execution_timeout
        )
        if error:
            log.error("%s", error)
    except task_runner.TrySkipped as exc:
        skipped, error, rendered = True, str(exc), exc.rendered
        log.info("task skipped: %s", error)
    except task_runner.TryRescheduled as exc:
        _stop_running(flags, heartbeat, previous_term)
        return task_runner.record_reschedule(workload, exc.reschedule_date, exc.rendered)
    except TaskTerminated as exc:
        exception = exc
        interrupted = not flags.lost
        error = (
            f"{exc}: will be retried"
            if interrupted
            else f"{exc}: this try is no longer running in the database (cleared, marked "
            "or timed out elsewhere), so its supervisor stopped it"
        )
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
        _stop_running(flags, heartbeat, previous_term)
    code = task_runner.record_result(
        workload,
        success,
        error,
        rendered,
        interrupted,
        skipped,
        skips,
        exception=exception,
        force_fail=force_fail,
        started=started,
        outlets=outlets,
    )
    if code == 0:
        flags.set_recorded()
    return code


def _stop_running(flags: TryFlags, heartbeat: _Heartbeat | None, previous_term: Any) -> None:
    """The task code is over: no more heartbeats (the result is next), SIGTERM noted again."""
    flags.set_running(False)
    if heartbeat is not None:
        heartbeat.halt.set()
    signal.signal(signal.SIGTERM, previous_term)


def preload_imports() -> None:
    """Import, in a process that will fork tries (or fork the processes that do), what
    every try needs: the authoring API with its operators and sensors, the task's
    modules, the masker's secrets backends, the database dialect and driver. A try
    forked from it starts with them instead of importing them itself, each time."""
    import jinja2.ext  # noqa: F401  (every DAG's template environment loads "do")

    import flowsched  # the authoring API: operators, sensors, decorators
    import flowsched.secrets  # noqa: F401  (the output masker reads its backends)
    from flowsched.context import local_zone
    from flowsched.db.engine import get_engine

    get_engine()  # the dialect and its driver: no connection yet
    local_zone()  # the zone the task's dates are shown in


_warmed = False


def _warm_up() -> None:
    """Once per process that forks tries, before its first: the imports, a database
    connection (the dialect's set-up) and the try's statements compiled
    (:func:`flowsched.lifecycle.warm_up`), all inherited by every try it forks. Best
    effort: a database that is down now is the tries' business (they wait for it)."""
    global _warmed
    if _warmed:
        return
    _warmed = True
    preload_imports()
    from flowsched.lifecycle import warm_up

    try:
        with session_scope() as session:
            warm_up(session)
    except Exception as exc:
        worker_log.info("could not prepare the database statements of tries: %s", exc)


class TryNotStarted(FlowschedError):
    """The try's process could not be forked (a process or memory limit)."""


class TryExit(NamedTuple):
    """How a try's process ended: its exit code, and whether it had claimed its try
    (a message it refused, or that crashed before claiming, never touches a try
    someone else runs: see :func:`record_crash`)."""

    code: int
    claimed: bool


def fork_and_run(workload: Workload, *, nodename: str) -> TryExit:
    """Run a try in a child process and wait; forward SIGTERM to it. Returns how it ended.

    The try runs in its own session (a terminal's signals aimed at us do not reach
    it) and dies with this process (parent-death signal SIGTERM: it records itself
    as interrupted). Whatever ends the try, even ``kill -9``, everything it started
    is killed before this returns, hence before a crash can be recorded and the
    try retried: its process group, and (this process being a subreaper) whatever
    it left in other sessions, such as a BashOperator's shell.
    """
    supervisor = os.getpid()
    # Before the preload: what a DAG file forks goes too. No children (the usual
    # case) is one system call; listing them reads all of /proc.
    spare = children_of(supervisor) if has_children() else set()
    _warm_up()
    task_runner.preload(workload)
    become_subreaper()
    flags = TryFlags()
    try:
        # The try starts with a connection this process opened for it (no CONNECT
        # before its claim); this process keeps none of it.
        with handing_over():
            pid = os.fork()
    except OSError as exc:
        raise TryNotStarted(
            f"cannot start a process for {workload.describe()}: {fork_failure_hint(exc)}"
        ) from exc
    if pid == 0:
        _run_forked_try(workload, nodename, supervisor, flags)

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
        open_connection_for_next_try()  # while the try runs: ready for the next one
        _wait_and_beat(pid, workload, flags)
    finally:
        signal.signal(signal.SIGTERM, previous)
    status = _end_try_tree(pid, spare, workload)
    return TryExit(os.waitstatus_to_exitcode(status), flags.claimed)


def _end_try_tree(pid: int, spare: set[int], workload: Workload) -> int:
    """Kill whatever the ended try ``pid`` (a zombie) left behind; its wait status.

    This process is a subreaper, so everything the try left alive, in its process
    group or not, became a child of ours (or lies below one) when it ended. With
    no child of ours before the try (``spare`` empty), the group is killed, the
    try reaped, and if no child is left then nothing of the try is: no scan of
    /proc. Otherwise :func:`~flowsched.processes.end_tree` hunts the tree down.
    """
    if not spare:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGKILL)
        _, status = os.waitpid(pid, 0)
        # Reaped, its pid and group id may be reused now: the hunt goes by parentage,
        # and every process below this one is the try's (there was none before it).
        survivors = end_tree(os.getpid()) if has_children() else []
    else:
        survivors = end_tree(pid, pgid=pid, spare=spare)
        _, status = os.waitpid(pid, 0)
    if survivors:
        log.error(
            "%s: processes %s of the try survived SIGKILL for %g s (uninterruptible?)",
            workload.describe(),
            survivors,
            DEFAULT_DEADLINE,
        )
    return status


def _run_forked_try(workload: Workload, nodename: str, supervisor: int, flags: TryFlags) -> None:
    """The child side of :func:`fork_and_run`; never returns."""
    code = 1
    try:
        os.setsid()
        for_a_try_process()
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, _note_stop)
        set_parent_death_signal(signal.SIGTERM, parent=supervisor)
        code = run_try(workload, nodename=nodename, flags=flags)
    except BaseException:
        with contextlib.suppress(Exception):
            traceback.print_exc()
    finally:
        with contextlib.suppress(Exception):
            sys.stdout.flush()
            sys.stderr.flush()
            secrets_masker.finish_output()
            if flags.recorded:
                _announce_result(workload)
        if os.getppid() != supervisor:
            # Orphaned: nobody will clear our group after us. Doing it kills us too.
            os.killpg(0, signal.SIGKILL)
        os._exit(code)


def record_crash(
    workload: Workload,
    nodename: str,
    exit_code: int,
    reason: str | None = None,
    *,
    claimed: bool = True,
) -> None:
    """The try's process died (or could not start) without recording a result:
    record it for it, with what happened, and retry.

    A process that had not claimed the try (it could not start, or died before its
    claim) fails the try only if it is still queued: a duplicate message of a try
    running elsewhere must not end it.

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
    expected = (TaskState.RUNNING,) if claimed else (TaskState.QUEUED,)
    state = task_runner.fail_try(workload, error, expected)
    if state is not None:
        log.error("%s: %s -> %s", workload.describe(), error, state)
