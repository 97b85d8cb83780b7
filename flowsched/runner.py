"""Running one try of one task: the code every executor ends up calling.

A try runs in its own process (forked by :func:`fork_and_run`), in its own
session so terminal signals aimed at the scheduler or worker do not reach it.
The runner claims the try atomically, checks the DAG file's fingerprint
against the one the scheduler queued, heartbeats, enforces the timeout,
records the result and applies the retry policy. Whatever happens, the try's
outcome is written by the only process that knows it.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import sys
import threading
import traceback
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from sqlalchemy import select

from flowsched import secrets_masker, task_callbacks
from flowsched.config import get_config
from flowsched.context import current_context, date_context, run_for_templates
from flowsched.db.engine import db_outage, is_db_outage, session_scope, with_db_retry
from flowsched.db.models import DagRun, DagVersion, TaskInstance
from flowsched.discovery import exec_dag_file
from flowsched.exceptions import (
    AirflowFailException,
    AirflowRescheduleException,
    DagFileMismatch,
    FlowschedError,
    SkipTask,
    TaskTerminated,
    TaskTimeout,
)
from flowsched.hostname import get_hostname
from flowsched.lifecycle import (
    claim_try,
    finish_try,
    heartbeat_try,
    reschedule_try,
    skip_tasks,
    skip_try,
)
from flowsched.mapped_operator import check_pushed_for_mapping, is_mapped
from flowsched.operators.skip import SkipMixin
from flowsched.outage import EXIT_RESULT_NOT_RECORDED, OutageTooLong, result_retry_cap
from flowsched.params import run_params
from flowsched.plugins import check_plugin_files, load_plugins
from flowsched.processes import (
    DEFAULT_DEADLINE,
    become_subreaper,
    children_of,
    end_tree,
    fork_failure_hint,
    set_parent_death_signal,
)
from flowsched.releases import dag_file_for, releases_of
from flowsched.serialization import SerializedDAG, TaskSpec
from flowsched.state import TaskState
from flowsched.task_env import scrub_task_environment
from flowsched.task_logs import open_for_append, relative_log_path
from flowsched.template_accessors import template_accessors
from flowsched.templating import BUILTIN_MACROS
from flowsched.timezone import display, utcnow
from flowsched.workloads import Workload
from flowsched.xcom import TaskInstanceContext, pull_xcom, push_xcom

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
def _timeout(limit: timedelta | None) -> Iterator[None]:
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


def retry_delay_for(session: Any, workload: Workload) -> timedelta:
    """The task's delay before its next try, from the DAG version the try was queued with."""
    if workload.dag_version_id is None:
        return timedelta(0)
    version = session.get(DagVersion, workload.dag_version_id)
    if version is None:
        return timedelta(0)
    for task in version.serialized["tasks"]:
        if task["task_id"] == workload.task_id:
            return TaskSpec.from_dict(task).retry_delay_for(workload.try_number)
    return timedelta(0)


class _Macros:
    """``{{ macros.ds_add(ds, 1) }}`` plus plugin macros; plugins load on first use only."""

    def __getattr__(self, name: str) -> Any:
        namespace = SimpleNamespace(**{**BUILTIN_MACROS, **load_plugins().macros})
        try:
            return getattr(namespace, name)
        except AttributeError:
            raise AttributeError(f"no template macro '{name}'") from None


def macros_namespace() -> _Macros:
    return _Macros()


def build_context(workload: Workload, task: Any, dag: Any, run: DagRun) -> dict[str, Any]:
    ti = TaskInstanceContext(
        workload.dag_id, workload.run_id, workload.task_id, workload.ti_id, workload.map_index
    )
    ti.try_number = workload.try_number  # type: ignore[attr-defined]
    return {
        "dag": dag,
        "task": task,
        "ti": ti,
        "task_instance": ti,
        "dag_run": run_for_templates(run),
        "dag_id": workload.dag_id,
        "task_id": workload.task_id,
        "run_id": workload.run_id,
        "try_number": workload.try_number,
        **date_context(dag, task, run),
        "params": run_params(
            dag.params, task.params, run.conf, get_config().core.dag_run_conf_overrides_params
        ),
        "conf": run.conf or {},
        "macros": macros_namespace(),
        "inlets": task.inlets,
        "outlets": task.outlets,
        "templates_dict": None,
        "test_mode": False,
        **template_accessors(),
    }


class _Skipped(Exception):
    """The try ends skipped (SkipTask), keeping what it rendered for the record."""

    def __init__(self, reason: str, rendered: dict[str, Any] | None) -> None:
        super().__init__(reason)
        self.rendered = rendered


class _Rescheduled(Exception):
    """A sensor in mode="reschedule" asked to poke again later (same try)."""

    def __init__(self, reschedule_date: Any, rendered: dict[str, Any] | None) -> None:
        super().__init__(f"rescheduled to {reschedule_date}")
        self.reschedule_date = reschedule_date
        self.rendered = rendered


def _push_result(workload: Workload, task: Any, result: Any) -> None:
    """The return value as XCom (unless do_xcom_push=False), per key with multiple_outputs."""
    if result is None or not task.do_xcom_push:
        return
    values = {"return_value": result}
    if task.multiple_outputs:
        if not isinstance(result, dict) or not all(isinstance(k, str) for k in result):
            raise TypeError(
                f"task '{task.task_id}' has multiple_outputs=True but returned "
                f"{type(result).__name__}: return a dict with string keys"
            )
        values.update(result)

    def push() -> None:
        with session_scope() as session:
            for key, value in values.items():
                push_xcom(session, workload, key, value)

    # The task's return value is part of its result: kept through a database outage.
    with_db_retry(push, db_outage(log, max_delay=_result_retry_cap()))


NOTHING: frozenset[str] = frozenset()


def _puller(workload: Workload) -> Any:
    """Reads the run's XComs for a mapped task's copy: (task_id, key) -> value."""

    def pull(task_id: str, key: str) -> Any:
        with session_scope(read_only=True) as session:
            return pull_xcom(session, workload.dag_id, workload.run_id, task_id, key)

    return pull


def _execute(
    workload: Workload, nodename: str
) -> tuple[bool, str | None, dict[str, Any] | None, frozenset[str]]:
    """Load, check and execute the task; (success, error, rendered fields, tasks to skip).

    The tasks to skip are what a branch or short-circuit chose; they are written
    with the try's success, never before it.
    """
    folder = Path(get_config().core.dags_folder)
    path = folder.resolve() / workload.fileloc
    rendered: dict[str, Any] | None = None
    mismatches = check_plugin_files(workload.plugins)
    if mismatches:
        relative, expected, local = mismatches[0]
        return (
            False,
            (
                f"plugin file {relative} differs on worker {nodename}: scheduler has sha256 "
                f"{expected[:12]}…, this worker has {local[:12] + '…' if local else 'no such file'}"
            ),
            None,
            NOTHING,
        )
    try:
        # The newest kept release with the queued bytes: a sync since then fails nothing.
        path = dag_file_for(folder, workload.fileloc, workload.fingerprint)
        dags = _preloaded.get((workload.fileloc, workload.fingerprint))
        if dags is None or workload.plugins:
            _, _, dags = exec_dag_file(path, workload.fileloc, expected=workload.fingerprint)
    except DagFileMismatch as exc:
        kept = len(releases_of(folder))
        return (
            False,
            (
                f"dag file differs on worker {nodename}: scheduler has sha256 "
                f"{workload.fingerprint[:12]}…, this worker has {str(exc)[:12]}… ({path})"
                + (f"; none of the {kept} kept releases has it" if kept > 1 else "")
            ),
            None,
            NOTHING,
        )
    except FileNotFoundError:
        return False, f"dag file {path} does not exist on worker {nodename}", None, NOTHING
    dag = next((d for d in dags if d.dag_id == workload.dag_id), None)
    if dag is None:
        return False, f"{path} no longer defines DAG '{workload.dag_id}'", None, NOTHING
    task = dag.tasks.get(workload.task_id)
    if task is None:
        return False, f"DAG '{workload.dag_id}' has no task '{workload.task_id}'", None, NOTHING
    if is_mapped(task):
        # This copy's operator, from the run's XComs (see flowsched.mapped_operator).
        task = task.unmap(workload.map_index, _puller(workload))
    with session_scope(read_only=True) as session:
        run = session.scalar(
            select(DagRun).where(DagRun.dag_id == workload.dag_id, DagRun.run_id == workload.run_id)
        )
        assert run is not None
        session.expunge(run)
    context = build_context(workload, task, dag, run)
    task_callbacks.remember(task, context)
    try:
        # Stored with the try for the record: anything not JSON is kept as its repr.
        rendered = json.loads(json.dumps(task.render_template_fields(context), default=repr))
        rendered = secrets_masker.redact(rendered)  # shown on the task page: no secrets
        task_callbacks.on_execute()
        with _timeout(task.execution_timeout), current_context(context):
            result = task.execute(context)
        check_pushed_for_mapping(task, result)
        _push_result(workload, task, result)
        skips = frozenset(task.tasks_to_skip) if isinstance(task, SkipMixin) else NOTHING
        return True, None, rendered, skips
    except SkipTask as exc:
        raise _Skipped(str(exc), rendered) from None
    except AirflowRescheduleException as exc:
        raise _Rescheduled(exc.reschedule_date, rendered) from None
    except (TaskTerminated, TaskTimeout):
        with contextlib.suppress(Exception):
            task.on_kill()
        raise


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


def fail_try(
    workload: Workload, error: str, expected: tuple[TaskState, ...] = (TaskState.RUNNING,)
) -> TaskState | None:
    """Record a failed try with ``error`` as its reason, applying its retry policy.

    For failures outside the task's code: a try that could not be set up (here),
    or a task process that died (:func:`flowsched.worker.task.record_crash`).
    """
    return finish_through_outage(
        workload, success=False, error=error, expected_states=expected, request_callbacks=True
    )


def run_try(workload: Workload, *, nodename: str, foreground: bool = False) -> int:
    """Run one try in this process. Returns 0 when the outcome was recorded."""
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
        state = fail_try(workload, setup_error)
        log.error("%s failed before running: %s -> %s", workload.describe(), setup_error, state)
        return 0
    log.info("running %s on %s (%s), pid %s", workload.describe(), nodename, hostname, os.getpid())
    previous_term = signal.signal(signal.SIGTERM, _terminate)
    heartbeat = _Heartbeat(workload, conf.scheduler.task_heartbeat_interval)
    heartbeat.start()
    success, error, rendered, interrupted = False, None, None, False
    skipped, skips, exception, force_fail = False, NOTHING, None, False
    try:
        if _stop_requested:
            raise TaskTerminated("the task was stopped (SIGTERM) before it started")
        scrub_task_environment()  # no cluster secrets for task code (flowsched.task_env)
        success, error, rendered, skips = _execute(workload, nodename)
        if error:
            log.error("%s", error)
    except _Skipped as exc:
        skipped, error, rendered = True, str(exc), exc.rendered
        log.info("task skipped: %s", error)
    except _Rescheduled as exc:
        heartbeat.halt.set()
        signal.signal(signal.SIGTERM, previous_term)
        return _record_reschedule(workload, exc.reschedule_date, exc.rendered)
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
    return _record_result(
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


def _record_reschedule(workload: Workload, when: Any, rendered: dict[str, Any] | None) -> int:
    """Write up_for_reschedule (waiting out a database outage) and end the process."""

    def record() -> TaskState | None:
        with session_scope() as session:
            return reschedule_try(
                session,
                workload.ti_id,
                workload.try_number,
                reschedule_date=when,
                rendered_fields=rendered,
            )

    try:
        state = with_db_retry(record, db_outage(log, max_delay=_result_retry_cap()))
    except OutageTooLong as exc:
        log.error("%s rescheduled but %s", workload.describe(), exc)
        return EXIT_RESULT_NOT_RECORDED
    log.info(
        "%s: %s until %s", workload.describe(), state or "state changed elsewhere", display(when)
    )
    return 0


def _record_result(
    workload: Workload,
    success: bool,
    error: str | None,
    rendered: dict[str, Any] | None,
    interrupted: bool,
    skipped: bool = False,
    skips: frozenset[str] = frozenset(),
    *,
    exception: BaseException | None = None,
    force_fail: bool = False,
) -> int:
    """Write the try's outcome, waiting out a database outage: a finished try must not
    be lost (and run again) because the database was down when it ended; then call
    the task's callback for it (:mod:`flowsched.task_callbacks`)."""
    reason = secrets_masker.redact(error.splitlines()[-1]) if error else None
    try:
        if skipped:
            state = _skip_through_outage(workload, reason, rendered)
        else:
            state = finish_through_outage(
                workload,
                success=success,
                error=reason,
                interrupted=interrupted,
                rendered_fields=rendered,
                skips=skips,
                request_callbacks=not task_callbacks.loaded(),
                force_fail=force_fail,
            )
    except OutageTooLong as exc:
        log.error("%s ended (%s) but %s", workload.describe(), _outcome(success, error), exc)
        return EXIT_RESULT_NOT_RECORDED
    log.info("%s finished: %s", workload.describe(), state or "state changed elsewhere")
    task_callbacks.after_result(state, exception, error, interrupted)
    return 0


def _skip_through_outage(
    workload: Workload, reason: str | None, rendered: dict[str, Any] | None
) -> TaskState | None:
    """:func:`~flowsched.lifecycle.skip_try`, retried through a database outage."""

    def record() -> TaskState | None:
        with session_scope() as session:
            return skip_try(
                session,
                workload.ti_id,
                workload.try_number,
                reason=reason,
                rendered_fields=rendered,
            )

    return with_db_retry(record, db_outage(log, max_delay=_result_retry_cap()))


def finish_through_outage(
    workload: Workload,
    *,
    success: bool,
    error: str | None,
    expected_states: tuple[TaskState, ...] = (TaskState.RUNNING,),
    interrupted: bool = False,
    rendered_fields: dict[str, Any] | None = None,
    skips: frozenset[str] = frozenset(),
    request_callbacks: bool = False,
    force_fail: bool = False,
) -> TaskState | None:
    """:func:`~flowsched.lifecycle.finish_try` with the retry policy of the try's DAG
    version, retried through a database outage.

    The tasks a branch or short-circuit chose to skip (``skips``) are written in
    the same transaction as its success, never before it.

    Retries back off to at most a quarter of ``zombie_threshold``, so once the
    database is back the result lands well before the scheduler (which waits a
    full threshold after its own outage) could take the try for a zombie. A
    retried commit that had in fact landed finds the try no longer in
    ``expected_states`` and changes nothing.
    """

    def record() -> TaskState | None:
        with session_scope() as session:
            state = finish_try(
                session,
                workload.ti_id,
                workload.try_number,
                success=success,
                error=error,
                retry_delay=timedelta(0) if success else retry_delay_for(session, workload),
                expected_states=expected_states,
                interrupted=interrupted,
                rendered_fields=rendered_fields,
                request_callbacks=request_callbacks,
                force_fail=force_fail,
            )
            if state is TaskState.SUCCESS and skips:
                skip_tasks(session, workload.dag_id, workload.run_id, skips)
            return state

    return with_db_retry(record, db_outage(log, max_delay=_result_retry_cap()))


def _result_retry_cap() -> float:
    return result_retry_cap(get_config().scheduler.zombie_threshold)


def _outcome(success: bool, error: str | None) -> str:
    if success:
        return "success"
    return f"failed: {error.splitlines()[-1]}" if error else "failed"


# DAG files imported once by a long-lived pool process, keyed by (file, sha256),
# so the tries it forks need not re-run a large DAG file. Each try is still a
# fresh fork, and the file on disk is still checked against the queued sha256.
_preloaded: dict[tuple[str, str], list[Any]] = {}
PRELOAD_LIMIT = 32


def _preload(workload: Workload) -> None:
    key = (workload.fileloc, workload.fingerprint)
    if key in _preloaded or workload.plugins:
        return  # tasks from plugins import fresh each try: the plugin may change alone
    try:
        path = dag_file_for(
            Path(get_config().core.dags_folder), workload.fileloc, workload.fingerprint
        )
    except (OSError, DagFileMismatch):
        return  # the try looks again itself and reports it

    def expire(*_: object) -> None:
        raise TaskTimeout("DAG file import timed out")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, get_config().core.dagbag_import_timeout)
    try:
        _, _, dags = exec_dag_file(path, workload.fileloc, expected=workload.fingerprint)
    except (Exception, SystemExit):  # the try imports again itself and reports it
        return
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    if len(_preloaded) >= PRELOAD_LIMIT:
        _preloaded.pop(next(iter(_preloaded)))
    _preloaded[key] = dags


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
    _preload(workload)
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


class RunnerError(FlowschedError):
    pass


def foreground_workload(dag_id: str, task_id: str, run_id: str, map_index: int = -1) -> Workload:
    """Queue one task (one copy of a mapped task) of an existing run for
    ``flowsched tasks run`` (debugging)."""
    from flowsched.lifecycle import queue_try

    with session_scope() as session:
        ti = session.scalar(
            select(TaskInstance).where(
                TaskInstance.dag_id == dag_id,
                TaskInstance.run_id == run_id,
                TaskInstance.task_id == task_id,
                TaskInstance.map_index == map_index,
            )
        )
        if ti is None:
            where = f" map_index {map_index}" if map_index >= 0 else ""
            raise RunnerError(
                f"no task '{task_id}'{where} in run '{run_id}' of DAG '{dag_id}'"
                + (" (a mapped task: give --map-index)" if map_index < 0 else "")
            )
        if ti.state in ("queued", "running"):
            raise RunnerError(
                f"{dag_id}.{task_id} in {run_id} is {ti.state}; not starting it twice"
            )
        version = session.get(DagVersion, ti.dag_version_id) if ti.dag_version_id else None
        if version is None:
            from flowsched.scheduler.runs import latest_version

            _, version = latest_version(session, dag_id)
        ti.state = "scheduled"
        session.flush()
        spec = SerializedDAG(version.serialized).tasks.get(task_id)
        workload = queue_try(
            session,
            ti,
            fingerprint=version.fingerprint,
            dag_version_id=version.id,
            fileloc=version.fileloc,
            queue=ti.queue or get_config().celery.default_queue,
            job_id=None,
            now=utcnow(),
            plugins=dict(spec.plugin_files) if spec else {},
        )
        if workload is None:
            raise RunnerError(f"{dag_id}.{task_id} changed state meanwhile; try again")
        return workload
