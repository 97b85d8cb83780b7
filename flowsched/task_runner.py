"""The task side of one try: what runs inside the process the supervisor made.

Loads the DAG file (checked against the fingerprint the scheduler queued, from
the newest kept release that has it), builds the template context, renders
the templated fields, executes the task, pushes its return value as XCom and
records the outcome with its retry policy and callbacks, through a database
outage if need be. The process around it (fork, process group, heartbeat,
timeout, log file, signals) is :mod:`flowsched.supervisor`'s.
"""

from __future__ import annotations

import contextlib
import json
import logging
import signal
from collections.abc import Callable
from contextlib import AbstractContextManager
from datetime import datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any, NamedTuple, TypeVar

from sqlalchemy import select

from flowsched import secrets_masker, task_callbacks
from flowsched.config import get_config
from flowsched.context import current_context, date_context, run_for_templates
from flowsched.db.engine import db_outage, session_scope, with_db_retry
from flowsched.db.models import DagRun, DagVersion, TaskInstance
from flowsched.discovery import exec_dag_file
from flowsched.exceptions import (
    AirflowRescheduleException,
    DagFileMismatch,
    FlowschedError,
    SkipTask,
    TaskTerminated,
    TaskTimeout,
)
from flowsched.lifecycle import (
    finish_try,
    reschedule_try,
    skip_tasks,
    skip_try,
)
from flowsched.mapped_operator import check_pushed_for_mapping, is_mapped
from flowsched.operators.skip import SkipMixin
from flowsched.outage import EXIT_RESULT_NOT_RECORDED, OutageTooLong, result_retry_cap
from flowsched.params import run_params
from flowsched.plugins import check_plugin_files, load_plugins
from flowsched.releases import dag_file_for, releases_of
from flowsched.serialization import SerializedDAG
from flowsched.state import TaskState
from flowsched.template_accessors import template_accessors
from flowsched.templating import BUILTIN_MACROS, template_environment
from flowsched.timezone import display, utcnow
from flowsched.workloads import Workload
from flowsched.xcom import TaskInstanceContext, pull_xcom, push_xcom

log = logging.getLogger("flowsched.task")
T = TypeVar("T")


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


class TrySkipped(Exception):
    """The try ends skipped (SkipTask), keeping what it rendered for the record."""

    def __init__(self, reason: str, rendered: dict[str, Any] | None) -> None:
        super().__init__(reason)
        self.rendered = rendered


class TryRescheduled(Exception):
    """A sensor in mode="reschedule" asked to poke again later (same try)."""

    def __init__(self, reschedule_date: Any, rendered: dict[str, Any] | None) -> None:
        super().__init__(f"rescheduled to {reschedule_date}")
        self.reschedule_date = reschedule_date
        self.rendered = rendered


def _through_outage(action: Callable[[], T]) -> T:
    """``action()`` (a lifecycle call in its own transaction), retried through a database
    outage: a try's result must not be lost (and the try run again) because the database
    was down when it ended. Retries back off to at most a quarter of ``zombie_threshold``,
    so once the database is back the result lands well before the scheduler (which waits
    a full threshold after its own outage) could take the try for a zombie; raises
    :class:`~flowsched.outage.OutageTooLong` past ``[core] outage_tolerance``."""
    return with_db_retry(action, db_outage(log, max_delay=_result_retry_cap()))


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
    _through_outage(push)


NOTHING: frozenset[str] = frozenset()


class Executed(NamedTuple):
    """What :func:`execute` came to, for the supervisor to record."""

    success: bool
    error: str | None
    rendered: dict[str, Any] | None = None
    # What a branch or short-circuit chose to skip, written with the success.
    skips: frozenset[str] = NOTHING
    # Whether the task has dataset outlets, whose events are recorded with its success.
    outlets: bool = True


# The run's fields a workload carries as ISO 8601 text.
_RUN_DATES = ("logical_date", "data_interval_start", "data_interval_end", "start_date")


def _run_of(workload: Workload) -> DagRun:
    """The try's run, as the scheduler queued it: from the workload's fields (no
    database read), else (a workload queued without them) read from the database."""
    if workload.run is not None:
        fields = {
            key: datetime.fromisoformat(value) if key in _RUN_DATES and value else value
            for key, value in workload.run.items()
        }
        return DagRun(dag_id=workload.dag_id, run_id=workload.run_id, **fields)
    with session_scope(read_only=True) as session:
        run = session.scalar(
            select(DagRun).where(DagRun.dag_id == workload.dag_id, DagRun.run_id == workload.run_id)
        )
        assert run is not None
        session.expunge(run)
    return run


def _puller(workload: Workload) -> Any:
    """Reads the run's XComs for a mapped task's copy: (task_id, key) -> value."""

    def pull(task_id: str, key: str) -> Any:
        with session_scope(read_only=True) as session:
            return pull_xcom(session, workload.dag_id, workload.run_id, task_id, key)

    return pull


def execute(
    workload: Workload,
    nodename: str,
    time_limit: Callable[[timedelta | None], AbstractContextManager[None]],
) -> Executed:
    """Load, check and execute the task: what it came to (:class:`Executed`).

    ``time_limit`` enforces the task's ``execution_timeout`` around ``execute``
    only (not the file load nor the rendering): it is the process's business,
    given by the supervisor.

    The tasks to skip are what a branch or short-circuit chose; they are written
    with the try's success, never before it.
    """
    folder = Path(get_config().core.dags_folder)
    path = folder.resolve() / workload.fileloc
    rendered: dict[str, Any] | None = None
    mismatches = check_plugin_files(workload.plugins)
    if mismatches:
        relative, expected, local = mismatches[0]
        return Executed(
            False,
            (
                f"plugin file {relative} differs on worker {nodename}: scheduler has sha256 "
                f"{expected[:12]}…, this worker has {local[:12] + '…' if local else 'no such file'}"
            ),
        )
    try:
        # The newest kept release with the queued bytes: a sync since then fails nothing.
        path = dag_file_for(folder, workload.fileloc, workload.fingerprint)
        dags = _preloaded.get((workload.fileloc, workload.fingerprint))
        if dags is None or workload.plugins:
            _, _, dags = exec_dag_file(path, workload.fileloc, expected=workload.fingerprint)
    except DagFileMismatch as exc:
        kept = len(releases_of(folder))
        return Executed(
            False,
            (
                f"dag file differs on worker {nodename}: scheduler has sha256 "
                f"{workload.fingerprint[:12]}…, this worker has {str(exc)[:12]}… ({path})"
                + (f"; none of the {kept} kept releases has it" if kept > 1 else "")
            ),
        )
    except FileNotFoundError:
        return Executed(False, f"dag file {path} does not exist on worker {nodename}")
    dag = next((d for d in dags if d.dag_id == workload.dag_id), None)
    if dag is None:
        return Executed(False, f"{path} no longer defines DAG '{workload.dag_id}'")
    task = dag.tasks.get(workload.task_id)
    if task is None:
        return Executed(False, f"DAG '{workload.dag_id}' has no task '{workload.task_id}'")
    if is_mapped(task):
        # This copy's operator, from the run's XComs (see flowsched.mapped_operator).
        task = task.unmap(workload.map_index, _puller(workload))
    context = build_context(workload, task, dag, _run_of(workload))
    task_callbacks.remember(task, context)
    try:
        # Stored with the try for the record: anything not JSON is kept as its repr.
        rendered = json.loads(json.dumps(task.render_template_fields(context), default=repr))
        rendered = secrets_masker.redact(rendered)  # shown on the task page: no secrets
        task_callbacks.on_execute()
        with time_limit(task.execution_timeout), current_context(context):
            result = task.execute(context)
        check_pushed_for_mapping(task, result)
        _push_result(workload, task, result)
        skips = frozenset(task.tasks_to_skip) if isinstance(task, SkipMixin) else NOTHING
        return Executed(True, None, rendered, skips, outlets=bool(task.outlets))
    except SkipTask as exc:
        raise TrySkipped(str(exc), rendered) from None
    except AirflowRescheduleException as exc:
        raise TryRescheduled(exc.reschedule_date, rendered) from None
    except (TaskTerminated, TaskTimeout):
        with contextlib.suppress(Exception):
            task.on_kill()
        raise


def fail_try(
    workload: Workload, error: str, expected: tuple[TaskState, ...] = (TaskState.RUNNING,)
) -> TaskState | None:
    """Record a failed try with ``error`` as its reason, applying its retry policy.

    For failures outside the task's code: a try that could not be set up (here),
    or a task process that died (:func:`flowsched.supervisor.record_crash`).
    """
    return finish_through_outage(
        workload, success=False, error=error, expected_states=expected, request_callbacks=True
    )


def record_reschedule(workload: Workload, when: Any, rendered: dict[str, Any] | None) -> int:
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
        state = _through_outage(record)
    except OutageTooLong as exc:
        log.error("%s rescheduled but %s", workload.describe(), exc)
        return EXIT_RESULT_NOT_RECORDED
    log.info(
        "%s: %s until %s", workload.describe(), state or "state changed elsewhere", display(when)
    )
    return 0


def record_result(
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
    started: datetime | None = None,
    outlets: bool = True,
) -> int:
    """Write the try's outcome, waiting out a database outage: a finished try must not
    be lost (and run again) because the database was down when it ended; then call
    the task's callback for it (:mod:`flowsched.task_callbacks`).

    ``started`` (the claim's time) and ``outlets`` (the task has dataset outlets) let
    a success be recorded without reading the instance first (see ``finish_try``)."""
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
                started=started,
                outlets=outlets,
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

    return _through_outage(record)


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
    started: datetime | None = None,
    outlets: bool = True,
) -> TaskState | None:
    """:func:`~flowsched.lifecycle.finish_try`, retried through a database outage.

    The tasks a branch or short-circuit chose to skip (``skips``) are written in
    the same transaction as its success, never before it. A retried commit that
    had in fact landed finds the try no longer in ``expected_states`` and
    changes nothing.
    """

    def record() -> TaskState | None:
        with session_scope() as session:
            state = finish_try(
                session,
                workload.ti_id,
                workload.try_number,
                success=success,
                error=error,
                expected_states=expected_states,
                interrupted=interrupted,
                rendered_fields=rendered_fields,
                request_callbacks=request_callbacks,
                force_fail=force_fail,
                started=started,
                outlets=outlets,
                # Nothing written after it: its COMMIT may go with it (one round trip).
                commit=not skips,
            )
            if state is TaskState.SUCCESS and skips:
                skip_tasks(session, workload.dag_id, workload.run_id, skips)
            return state

    return _through_outage(record)


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


def preload(workload: Workload) -> None:
    """Import the try's DAG file in this long-lived process, before it forks the try."""
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
    for dag in dags:
        with contextlib.suppress(Exception):  # the try builds it again and reports it
            template_environment(dag)  # kept on the DAG: each try inherits it built


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
            by_hand=True,
        )
        if workload is None:
            raise RunnerError(f"{dag_id}.{task_id} changed state meanwhile; try again")
        return workload
