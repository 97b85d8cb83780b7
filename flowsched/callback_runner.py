"""The callback runner: runs callback requests, never inside the scheduler.

:mod:`flowsched.lifecycle` writes a ``callback_request`` row in the transaction
that ends a run (DAG ``on_success_callback`` / ``on_failure_callback``, and the
``[alerts] on_failure`` notifiers for every failed run) or fails a try its
worker could not report (a zombie, a killed process, a try that failed before
its task was loaded). The DAG processor calls :func:`run_pending_callbacks`
between passes; each request runs in its own forked process, which imports the
DAG file as it is now, calls the callbacks (each with ``[alerts]
callback_timeout``) and is killed if it outlives them all. Output and errors go
to the DAG processor's log. A request is claimed by a conditional UPDATE (two
runners never run it both) and deleted once run; a claim left by a runner that
died is taken again after the request's deadline.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import sys
from datetime import timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import delete, or_, select, update

from flowsched.callbacks import REQUEST_TYPES, call_callbacks
from flowsched.config import get_config
from flowsched.db.engine import session_scope
from flowsched.db.models import CallbackRequest, Dag, DagRun, TaskInstance
from flowsched.processes import DEFAULT_DEADLINE, kill_group, set_parent_death_signal
from flowsched.state import TaskState
from flowsched.timezone import utcnow

log = logging.getLogger("flowsched.callbacks")

FIELDS = ("id", "callback_type", "dag_id", "run_id", "task_id", "try_number", "reason")


def request_deadline() -> float:
    """Seconds a request's process may live: the DAG file's import, then its callbacks
    (a run's own ones and the cluster's fallback notifiers) one after another."""
    conf = get_config()
    return conf.core.dagbag_import_timeout + 4 * conf.alerts.callback_timeout


def run_pending_callbacks(limit: int = 20) -> int:
    """Run up to ``limit`` waiting requests, oldest first; returns how many ran.

    Claimed one at a time, just before running: a claim never ages while it waits
    behind others, so it goes stale only when its runner died.
    """
    deadline = request_deadline()
    handled = 0
    while handled < limit:
        request = _claim_one(deadline)
        if request is None:
            break
        _run_in_child(request, deadline)
        with session_scope() as session:
            session.execute(delete(CallbackRequest).where(CallbackRequest.id == request["id"]))
        handled += 1
    return handled


def _claim_one(deadline: float) -> dict[str, Any] | None:
    stale = utcnow() - timedelta(seconds=deadline + DEFAULT_DEADLINE)
    claimable = or_(CallbackRequest.claimed_at.is_(None), CallbackRequest.claimed_at < stale)
    with session_scope() as session:
        rows = session.scalars(
            select(CallbackRequest).where(claimable).order_by(CallbackRequest.id).limit(5)
        ).all()
        for row in rows:  # another runner may win one: try the next
            won = session.execute(
                update(CallbackRequest)
                .where(CallbackRequest.id == row.id, claimable)
                .values(claimed_at=utcnow())
                .execution_options(synchronize_session=False)
            )
            if won.rowcount == 1:
                return {name: getattr(row, name) for name in FIELDS}
    return None


def _run_in_child(request: dict[str, Any], deadline: float) -> None:
    """Run one request in a forked process of its own group, killed at ``deadline``."""
    process = multiprocessing.get_context("fork").Process(
        target=_child_main, args=(request, os.getpid()), name="callback"
    )
    process.start()
    process.join(deadline)
    if process.is_alive():
        log.error(
            "callback %s for %s run %s: still running after %g s; killed",
            request["callback_type"],
            request["dag_id"],
            request["run_id"],
            deadline,
        )
    kill_group(process.pid)
    process.join(DEFAULT_DEADLINE)


def _child_main(request: dict[str, Any], parent: int) -> None:
    code = 0
    try:
        os.setpgid(0, 0)
        set_parent_death_signal(signal.SIGKILL, parent)
        _log_to_stderr()
        _run_request(request)
    except BaseException:
        log.exception("callback request %s could not run", request)
        code = 1
    finally:
        sys.stderr.flush()
        os._exit(code)


def _log_to_stderr() -> None:
    """This process's log is the runner's own stream (the DAG processor's log)."""
    root = logging.getLogger()
    formatter = next((h.formatter for h in root.handlers if h.formatter), None)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter or logging.Formatter("[%(asctime)s] %(levelname)s %(message)s"))
    root.handlers[:] = [handler]
    root.setLevel(min(root.level or logging.INFO, logging.INFO))


def _run_request(request: dict[str, Any]) -> None:
    from flowsched.discovery import exec_dag_file

    owner, name = REQUEST_TYPES[request["callback_type"]]
    where = f"{request['dag_id']} run {request['run_id']}" + (
        f" task {request['task_id']}" if request["task_id"] else ""
    )
    conf = get_config()
    with session_scope(read_only=True) as session:
        fileloc = session.scalar(select(Dag.fileloc).where(Dag.dag_id == request["dag_id"]))
        run = session.scalar(
            select(DagRun).where(
                DagRun.dag_id == request["dag_id"], DagRun.run_id == request["run_id"]
            )
        )
        ti = _instance_for(session, request)
        if run is not None:
            session.expunge(run)
        if ti is not None:
            session.expunge(ti)
    if fileloc is None or run is None:
        log.warning("%s: the DAG or run no longer exists; callback %s dropped", where, name)
        return
    path = Path(conf.core.dags_folder).resolve() / fileloc
    signal.signal(signal.SIGALRM, _import_timed_out)
    signal.setitimer(signal.ITIMER_REAL, conf.core.dagbag_import_timeout)
    try:
        _, _, dags = exec_dag_file(path, fileloc)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
    dag = next((d for d in dags if d.dag_id == request["dag_id"]), None)
    if dag is None:
        log.warning("%s: %s no longer defines the DAG; callback %s dropped", where, path, name)
        return
    context = _context(dag, run, ti, request)
    if owner == "dag":
        callbacks = list(dag.on_failure_callback if name == "on_failure_callback" else [])
        callbacks += list(dag.on_success_callback if name == "on_success_callback" else [])
        if request["callback_type"] == "dag_failure" and conf.alerts.on_failure:
            from flowsched.notifications.fallback import parse_fallback

            callbacks += parse_fallback(conf.alerts.on_failure)
    else:
        task = dag.tasks.get(request["task_id"])
        callbacks = list(getattr(task, name, [])) if task is not None else []
    if not callbacks:
        return
    call_callbacks(
        callbacks, context, name=name, where=where, timeout=conf.alerts.callback_timeout, logger=log
    )


def _import_timed_out(*_: object) -> None:
    raise TimeoutError("DAG file import timed out (core.dagbag_import_timeout)")


def _instance_for(session: Any, request: dict[str, Any]) -> TaskInstance | None:
    """The try a callback is about: the request's task, else (a run's callback) a failed
    task of the run for a failure, else the one that ended last, as Airflow gives."""
    query = select(TaskInstance).where(
        TaskInstance.dag_id == request["dag_id"], TaskInstance.run_id == request["run_id"]
    )
    if request["task_id"]:
        return session.scalar(query.where(TaskInstance.task_id == request["task_id"]))
    if request["callback_type"] == "dag_failure":
        failed = session.scalar(
            query.where(TaskInstance.state == TaskState.FAILED.value).order_by(
                TaskInstance.end_date.desc()
            )
        )
        if failed is not None:
            return failed
    return session.scalar(query.order_by(TaskInstance.end_date.desc(), TaskInstance.id.desc()))


def _context(dag: Any, run: DagRun, ti: TaskInstance | None, request: dict[str, Any]) -> Any:
    from flowsched.context import date_context, run_for_templates
    from flowsched.task_runner import build_context
    from flowsched.workloads import Workload

    task = dag.tasks.get(ti.task_id) if ti is not None else None
    if ti is not None and task is not None:
        workload = Workload(
            ti_id=ti.id,
            dag_id=ti.dag_id,
            task_id=ti.task_id,
            run_id=ti.run_id,
            try_number=request["try_number"] or ti.try_number,
            fingerprint=ti.fingerprint or "",
            fileloc=dag.fileloc or "",
            queue=ti.queue or "",
        )
        context = build_context(workload, task, dag, run)
        context["ti"].state = ti.state
    else:
        placeholder = type("NoTask", (), {"task_id": ""})()
        context = {
            "dag": dag,
            "dag_run": run_for_templates(run),
            "dag_id": run.dag_id,
            "run_id": run.run_id,
            "ti": None,
            "task_instance": None,
            "task": None,
            **date_context(dag, placeholder, run),
        }
    context["reason"] = request["reason"]
    context["exception"] = request["reason"] if request["task_id"] else None
    return context
