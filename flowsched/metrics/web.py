"""The webserver's metrics: request latency, served by the gunicorn master.

gunicorn runs several worker processes, each timing its own requests. They
write to prometheus_client's multiprocess files in a directory made for this
start of the webserver (and removed when it stops, along with the directories
of earlier starts whose master is gone); the master, which serves no pages,
reads them all and serves the sum on ``[metrics] webserver_port``.
"""

from __future__ import annotations

import contextlib
import glob
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from typing import Any

from flask import Flask, Response, g, request
from prometheus_client import CollectorRegistry, Histogram, multiprocess, values

from flowsched.config import get_config
from flowsched.metrics.exposition import MetricsServer, serve_metrics

log = logging.getLogger(__name__)

DIR_PREFIX = "flowsched-webserver-metrics-"

REQUEST_DURATION = Histogram(
    "flowsched_webserver_request_duration_seconds",
    "Time to answer a request, by method, Flask endpoint and status code.",
    ("method", "endpoint", "status"),
    registry=None,  # served through the multiprocess files, not a registry of this process
)


def _start_timer() -> None:
    g.metrics_started = time.perf_counter()


def _observe(response: Response) -> Response:
    started = g.pop("metrics_started", None)
    if started is not None:
        REQUEST_DURATION.labels(
            request.method, request.endpoint or "unmatched", str(response.status_code)
        ).observe(time.perf_counter() - started)
    return response


def install_request_metrics(app: Flask) -> None:
    """Time every request of ``app`` when Prometheus metrics are on.

    The timer starts in the first before-request hook, ahead of the login check
    (whose redirect would skip any hook after it), so every answer is timed.
    """
    if not get_config().metrics.prometheus_on:
        return
    app.before_request_funcs.setdefault(None, []).insert(0, _start_timer)
    app.after_request(_observe)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _remove_stale_dirs(parent: str) -> None:
    """Directories of earlier starts whose master died without cleaning (kill -9)."""
    for path in glob.glob(os.path.join(parent, DIR_PREFIX + "*")):
        pid_text = os.path.basename(path)[len(DIR_PREFIX) :].split("-", 1)[0]
        if pid_text.isdigit() and not _pid_alive(int(pid_text)):
            shutil.rmtree(path, ignore_errors=True)


@contextlib.contextmanager
def gunicorn_metrics(options: dict[str, Any]) -> Iterator[str | None]:
    """Around a gunicorn run: multiprocess mode, the master's /metrics, and cleanup.

    Adds the ``when_ready`` (serve) and ``child_exit`` hooks to ``options``.
    Yields the directory of this start's files, or None when Prometheus is off.
    """
    if not get_config().metrics.prometheus_on:
        yield None
        return
    parent = tempfile.gettempdir()
    _remove_stale_dirs(parent)
    path = tempfile.mkdtemp(prefix=f"{DIR_PREFIX}{os.getpid()}-", dir=parent)
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = path
    # Values made from now on (the first request of each worker) live in the files.
    previous = values.ValueClass
    values.ValueClass = values.MultiProcessValue()
    servers: list[MetricsServer] = []

    def when_ready(_arbiter: Any) -> None:
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry, path=path)
        server = serve_metrics(registry, "webserver")
        if server is not None:
            servers.append(server)

    def child_exit(_arbiter: Any, worker: Any) -> None:
        multiprocess.mark_process_dead(worker.pid, path)

    options["when_ready"] = when_ready
    options["child_exit"] = child_exit
    try:
        yield path
    finally:
        for server in servers:
            server.stop()
        values.ValueClass = previous
        os.environ.pop("PROMETHEUS_MULTIPROC_DIR", None)
        shutil.rmtree(path, ignore_errors=True)
