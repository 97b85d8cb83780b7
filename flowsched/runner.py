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

from flowsched.config import get_config
from flowsched.db.engine import db_outage, is_db_outage, session_scope, with_db_retry
from flowsched.db.models import DagRun, DagVersion, TaskInstance
from flowsched.discovery import exec_dag_file, fingerprint_bytes
from flowsched.exceptions import DagFileMismatch, FlowschedError, TaskTerminated, TaskTimeout
from flowsched.hostname import get_hostname
from flowsched.lifecycle import Workload, claim_try, finish_try, heartbeat_try
from flowsched.outage import EXIT_RESULT_NOT_RECORDED, OutageTooLong, result_retry_cap
from flowsched.plugins import check_plugin_files, load_plugins
from flowsched.serialization import SerializedDAG, TaskSpec
from flowsched.state import TaskState
from flowsched.task_logs import log_path
from flowsched.templating import BUILTIN_MACROS
from flowsched.timezone import default_timezone, display, utcnow
from flowsched.xcom import TaskInstanceContext, push_xcom

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


def _redirect_output(path: Path) -> None:
    """Send this process's stdout/stderr (and its children's) to the try's log file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)
    sys.stdout = os.fdopen(1, "w", buffering=1, encoding="utf-8", closefd=False)
    sys.stderr = os.fdopen(2, "w", buffering=1, encoding="utf-8", closefd=False)


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
    zone = default_timezone()
    logical_local = run.logical_date.astimezone(zone)
    ti = TaskInstanceContext(workload.dag_id, workload.run_id, workload.task_id, workload.ti_id)
    return {
        "dag": dag,
        "task": task,
        "ti": ti,
        "dag_id": workload.dag_id,
        "task_id": workload.task_id,
        "run_id": workload.run_id,
        "try_number": workload.try_number,
        "logical_date": logical_local,
        "data_interval_start": run.data_interval_start,
        "data_interval_end": run.data_interval_end,
        "ds": logical_local.strftime("%Y-%m-%d"),
        "ds_nodash": logical_local.strftime("%Y%m%d"),
        "ts": logical_local.isoformat(),
        "params": {**dag.params, **task.params, **(run.conf or {}).get("params", {})},
        "conf": run.conf or {},
        "macros": macros_namespace(),
    }


def _execute(workload: Workload, nodename: str) -> tuple[bool, str | None, dict[str, Any] | None]:
    """Load, check and execute the task; (success, error, rendered fields)."""
    conf = get_config()
    folder = Path(conf.core.dags_folder).resolve()
    path = folder / workload.fileloc
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
        )
    try:
        dags = _preloaded.get((workload.fileloc, workload.fingerprint))
        if dags is None or workload.plugins:
            _, _, dags = exec_dag_file(path, workload.fileloc, expected=workload.fingerprint)
        elif fingerprint_bytes(path.read_bytes()) != workload.fingerprint:
            raise DagFileMismatch(fingerprint_bytes(path.read_bytes()))
    except DagFileMismatch as exc:
        return (
            False,
            (
                f"dag file differs on worker {nodename}: scheduler has sha256 "
                f"{workload.fingerprint[:12]}…, this worker has {str(exc)[:12]}… ({path})"
            ),
            None,
        )
    except FileNotFoundError:
        return False, f"dag file {path} does not exist on worker {nodename}", None
    dag = next((d for d in dags if d.dag_id == workload.dag_id), None)
    if dag is None:
        return False, f"{path} no longer defines DAG '{workload.dag_id}'", None
    task = dag.tasks.get(workload.task_id)
    if task is None:
        return False, f"DAG '{workload.dag_id}' has no task '{workload.task_id}'", None
    with session_scope(read_only=True) as session:
        run = session.scalar(
            select(DagRun).where(DagRun.dag_id == workload.dag_id, DagRun.run_id == workload.run_id)
        )
        assert run is not None
        session.expunge(run)
    context = build_context(workload, task, dag, run)
    try:
        # Stored with the try for the record: anything not JSON is kept as its repr.
        rendered = json.loads(json.dumps(task.render_template_fields(context), default=repr))
        with _timeout(task.execution_timeout):
            result = task.execute(context)
        if result is not None:
            _push_result(workload, result)
        return True, None, rendered
    except (TaskTerminated, TaskTimeout):
        with contextlib.suppress(Exception):
            task.on_kill()
        raise


def _push_result(workload: Workload, result: Any) -> None:
    """The task's return value is part of its result: kept through a database outage."""

    def push() -> None:
        with session_scope() as session:
            push_xcom(session, workload, "return_value", result)

    with_db_retry(push, db_outage(log, max_delay=_result_retry_cap()))


def run_try(workload: Workload, *, nodename: str, foreground: bool = False) -> int:
    """Run one try in this process. Returns 0 when the outcome was recorded."""
    conf = get_config()
    path = log_path(workload.dag_id, workload.run_id, workload.task_id, workload.try_number)
    if foreground:
        path.parent.mkdir(parents=True, exist_ok=True)
        _configure_logging(sys.stdout)
        file_handler = logging.FileHandler(path, encoding="utf-8")
        file_handler.setFormatter(logging.getLogger().handlers[0].formatter)
        logging.getLogger().addHandler(file_handler)
    else:
        _redirect_output(path)
        _configure_logging(sys.stderr)
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
    log.info("running %s on %s (%s), pid %s", workload.describe(), nodename, hostname, os.getpid())
    previous_term = signal.signal(signal.SIGTERM, _terminate)
    heartbeat = _Heartbeat(workload, conf.scheduler.task_heartbeat_interval)
    heartbeat.start()
    success, error, rendered, interrupted = False, None, None, False
    try:
        success, error, rendered = _execute(workload, nodename)
        if error:
            log.error("%s", error)
    except TaskTerminated as exc:
        interrupted = not heartbeat.lost
        error = f"{exc}: will be retried" if interrupted else f"{exc}: stopped from outside"
        log.error("%s", error)
    except TaskTimeout as exc:
        error = str(exc)
        log.error("%s", error)
    except FlowschedError as exc:
        # An operator's own, explained failure (exit code, image, XCom...): no traceback.
        error = str(exc)
        log.error("task failed: %s", error)
    except BaseException as exc:
        error = "".join(traceback.format_exception(exc))
        log.error("task failed:\n%s", error)
    finally:
        heartbeat.halt.set()
        signal.signal(signal.SIGTERM, previous_term)
    return _record_result(workload, success, error, rendered, interrupted)


def _record_result(
    workload: Workload,
    success: bool,
    error: str | None,
    rendered: dict[str, Any] | None,
    interrupted: bool,
) -> int:
    """Write the try's outcome, waiting out a database outage: a finished try must not
    be lost (and run again) because the database was down when it ended."""
    try:
        state = finish_through_outage(
            workload,
            success=success,
            error=error.splitlines()[-1] if error else None,
            interrupted=interrupted,
            rendered_fields=rendered,
        )
    except OutageTooLong as exc:
        log.error("%s ended (%s) but %s", workload.describe(), _outcome(success, error), exc)
        return EXIT_RESULT_NOT_RECORDED
    log.info("%s finished: %s", workload.describe(), state or "state changed elsewhere")
    return 0


def finish_through_outage(
    workload: Workload,
    *,
    success: bool,
    error: str | None,
    expected_states: tuple[TaskState, ...] = (TaskState.RUNNING,),
    interrupted: bool = False,
    rendered_fields: dict[str, Any] | None = None,
) -> TaskState | None:
    """:func:`~flowsched.lifecycle.finish_try` with the retry policy of the try's DAG
    version, retried through a database outage.

    Retries back off to at most a quarter of ``zombie_threshold``, so once the
    database is back the result lands well before the scheduler (which waits a
    full threshold after its own outage) could take the try for a zombie. A
    retried commit that had in fact landed finds the try no longer in
    ``expected_states`` and changes nothing.
    """

    def record() -> TaskState | None:
        with session_scope() as session:
            return finish_try(
                session,
                workload.ti_id,
                workload.try_number,
                success=success,
                error=error,
                retry_delay=timedelta(0) if success else retry_delay_for(session, workload),
                expected_states=expected_states,
                interrupted=interrupted,
                rendered_fields=rendered_fields,
            )

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
    path = Path(get_config().core.dags_folder).resolve() / workload.fileloc

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


def fork_and_run(workload: Workload, *, nodename: str) -> int:
    """Run a try in a child process and wait; forward SIGTERM to it. Returns its exit code."""
    _preload(workload)
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            os.setsid()
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            code = run_try(workload, nodename=nodename)
        except BaseException:
            with contextlib.suppress(Exception):
                traceback.print_exc()
        finally:
            with contextlib.suppress(Exception):
                sys.stdout.flush()
                sys.stderr.flush()
            os._exit(code)

    def forward(signum: int, _frame: object) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signum)

    previous = signal.signal(signal.SIGTERM, forward)
    try:
        while True:
            try:
                _, status = os.waitpid(pid, 0)
                break
            except InterruptedError:
                continue
    finally:
        signal.signal(signal.SIGTERM, previous)
    return os.waitstatus_to_exitcode(status)


class RunnerError(FlowschedError):
    pass


def foreground_workload(dag_id: str, task_id: str, run_id: str) -> Workload:
    """Queue one task of an existing run for ``flowsched tasks run`` (debugging)."""
    from flowsched.lifecycle import queue_try

    with session_scope() as session:
        ti = session.scalar(
            select(TaskInstance).where(
                TaskInstance.dag_id == dag_id,
                TaskInstance.run_id == run_id,
                TaskInstance.task_id == task_id,
            )
        )
        if ti is None:
            raise RunnerError(f"no task '{task_id}' in run '{run_id}' of DAG '{dag_id}'")
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
