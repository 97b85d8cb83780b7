"""``flowsched worker``: a Celery worker with flowsched's identity, log server and shutdown.

* Nodename: ``--nodename``, else ``[worker] nodename``, else ``{ip}@{ip}``;
  never Celery's ``celery@socket.gethostname()``, which on VMs carved from
  big hosts named machines nobody could resolve.
* Never root unless ``--allow-root``: flowsched accepts JSON only, so
  nothing needs root; the refusal is ours (Celery only refuses with pickle).
* The log server listens before the worker consumes, so a worker whose logs
  could not be fetched does not start at all.
* SIGTERM is Celery's warm shutdown (stop consuming, let running tries
  finish); after ``[worker] shutdown_grace`` seconds the tries still running
  are sent SIGTERM, which they record as "interrupted" (retried without
  using up a retry) before exiting. The systemd unit needs
  ``KillMode=mixed`` so only the main process gets the first SIGTERM.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from pathlib import Path
from typing import Any

from celery import signals

from flowsched.config import get_config
from flowsched.exceptions import FlowschedError
from flowsched.hostname import default_nodename, get_hostname
from flowsched.processes import set_parent_death_signal

log = logging.getLogger("flowsched.worker")

ROOT_REFUSED = (
    "refusing to run the worker as root (uid 0): run it as the service user "
    "(the systemd unit runs it as User=flowsched), e.g. `sudo -u flowsched flowsched worker`. "
    "Tasks run with the worker's privileges. Pass --allow-root only if you really mean it."
)


class WorkerRefused(FlowschedError):
    """The worker will not start; the message says why and what to do."""


def check_not_root(allow_root: bool, euid: int | None = None) -> None:
    euid = os.geteuid() if euid is None else euid
    if euid == 0 and not allow_root:
        raise WorkerRefused(ROOT_REFUSED)


def _reset_db_after_fork(**_: Any) -> None:
    """Pool processes are forked from the worker: never share its DB connections."""
    from flowsched.db.engine import reset_engine

    reset_engine()


def _die_with_worker(main_pid: int) -> Any:
    """A pool process gets SIGTERM when the worker's main process dies (even kill -9):
    it forwards it to its running try, which records itself as interrupted."""

    def adopt(**_: Any) -> None:
        from flowsched.celery import task

        task.worker_main_pid = main_pid
        set_parent_death_signal(signal.SIGTERM, parent=main_pid)

    return adopt


class _GraceTimer:
    """On a warm shutdown, interrupt the tries still running after ``grace`` seconds."""

    def __init__(self, grace: float) -> None:
        self.grace = grace
        self.worker: Any = None
        self._started = False

    def on_shutting_down(self, how: str = "Warm", **_: Any) -> None:
        if how != "Warm" or self._started:
            return
        self._started = True
        threading.Thread(target=self._expire, name="shutdown-grace", daemon=True).start()

    def _expire(self) -> None:
        from celery.worker import state

        deadline = time.monotonic() + self.grace
        while state.active_requests and time.monotonic() < deadline:
            time.sleep(0.2)
        requests = list(state.active_requests)
        if not requests or self.worker is None:
            return
        log.warning(
            "shutdown grace of %gs is over: interrupting %d running tries (they will be retried)",
            self.grace,
            len(requests),
        )
        for request in requests:
            # The pool process forwards SIGTERM to the try, which records itself
            # as interrupted and exits; the pool process then returns normally.
            request.terminate(self.worker.pool, signal=signal.SIGTERM)


def _recover_in_background(nodename: str, hostname: str) -> None:
    """Re-queue the tries a previous life of this worker left running (see
    :mod:`flowsched.celery.recovery`), without holding up the start, and waiting
    out a database that is not reachable yet.

    Started once the pool processes exist (``worker_ready``): a thread that
    holds a lock while the pool forks would leave that lock held, forever, in
    the child, and the pool process would hang on its first task.
    """
    from flowsched.celery.recovery import requeue_tries_of_dead_self
    from flowsched.db.engine import db_outage, with_db_retry

    def recover() -> None:
        try:
            found = with_db_retry(
                lambda: requeue_tries_of_dead_self(nodename, hostname), db_outage(log)
            )
        except Exception:
            log.exception("could not look for tries lost by a previous life of %s", nodename)
            return
        if found:
            log.warning(
                "re-queued %d tries lost when %s last died: %s",
                len(found),
                nodename,
                ", ".join(found),
            )

    threading.Thread(target=recover, name="recover-lost-tries", daemon=True).start()


def run_worker(
    *,
    nodename: str | None = None,
    concurrency: int | None = None,
    queues: list[str] | None = None,
    allow_root: bool = False,
) -> int:
    """Start the worker in the foreground; returns its exit code."""
    from flowsched.celery.app import make_app
    from flowsched.celery.metrics import serve_worker_metrics
    from flowsched.task_logs.server import start_log_server
    from flowsched.tls import log_server_context

    check_not_root(allow_root)
    conf = get_config()
    if not conf.core.secret_key:
        raise WorkerRefused("[core] secret_key is empty: the log server needs it to check tokens")
    nodename = nodename or default_nodename()
    concurrency = concurrency or conf.celery.worker_concurrency
    queues = queues or [conf.celery.default_queue]
    hostname = get_hostname()
    app = make_app(conf)
    host, port = conf.worker.log_server_host, conf.worker.log_server_port
    try:
        server = start_log_server(
            host,
            port,
            Path(conf.logging.base_log_folder),
            conf.core.secret_key,
            log_server_context(conf),
        )
    except OSError as exc:
        raise WorkerRefused(
            f"log server cannot listen on {host}:{port} ([worker] log_server_host/port): {exc}"
        ) from exc
    try:
        metrics = serve_worker_metrics(nodename, concurrency)
    except FlowschedError as exc:
        server.shutdown()
        server.server_close()
        raise WorkerRefused(str(exc)) from None
    # Imported here, before Celery forks its pool processes, and so in every try
    # they fork (flowsched.supervisor): not once per pool process, nor per try.
    from flowsched.supervisor import preload_imports

    preload_imports()
    timer = _GraceTimer(conf.worker.shutdown_grace)
    signals.worker_process_init.connect(_reset_db_after_fork, weak=False)
    signals.worker_process_init.connect(_die_with_worker(os.getpid()), weak=False)
    signals.worker_shutting_down.connect(timer.on_shutting_down, weak=False)

    def announce(**_: Any) -> None:
        # After Celery set up logging, before it connects: shown even if the broker is down.
        log.info(
            "worker %s: hostname %s (recorded on its tries), log server http://%s:%s, "
            "queues %s, concurrency %s, shutdown grace %gs",
            nodename,
            hostname,
            host,
            port,
            ",".join(queues),
            concurrency,
            conf.worker.shutdown_grace,
        )

    signals.celeryd_after_setup.connect(announce, weak=False)
    worker = app.Worker(
        hostname=nodename,
        concurrency=concurrency,
        queues=queues,
        pool_cls="prefork",
        loglevel=conf.logging.level,
        without_gossip=True,
        without_mingle=True,
        optimization="fair",
    )
    timer.worker = worker
    signals.worker_ready.connect(lambda **_: _recover_in_background(nodename, hostname), weak=False)
    try:
        worker.start()
    finally:
        server.shutdown()
        server.server_close()
        if metrics is not None:
            metrics.stop()
    return int(worker.exitcode or 0)
