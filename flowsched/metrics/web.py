"""The webserver's metrics: request latency, summed over gunicorn's worker processes.

gunicorn runs several worker processes, each timing its own requests. They
write to prometheus_client's multiprocess files in a directory made for this
start of the webserver, removed when it stops (along with the directories of
earlier starts whose master is gone). gunicorn also listens on ``[metrics]
webserver_port``; a request arriving there is answered by whichever worker
takes it, with the sum read from every worker's files, and nothing else is
served on that port (nor ``/metrics`` on the pages' port).

No thread is started in the master: gunicorn forks its workers from it, and a
worker forked beside a running thread hung at exit on a lock that thread held.
"""

from __future__ import annotations

import contextlib
import glob
import logging
import os
import shutil
import socket
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from flask import Flask, Response, g, request
from prometheus_client import CollectorRegistry, Histogram, make_wsgi_app, multiprocess, values

from flowsched.config import get_config
from flowsched.exceptions import FlowschedError
from flowsched.processes import pid_alive

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


def _check_port(host: str, port: int) -> None:
    """Fail at start naming the option, rather than after gunicorn's five retries."""
    try:
        with socket.create_server((host, port)):
            pass
    except OSError as exc:
        raise FlowschedError(
            f"the webserver cannot serve metrics on {host}:{port} ([metrics] webserver_port): "
            f"{os.strerror(exc.errno) if exc.errno else exc}"
        ) from None


def _remove_stale_dirs(parent: str) -> None:
    """Directories of earlier starts whose master died without cleaning (kill -9)."""
    for path in glob.glob(os.path.join(parent, DIR_PREFIX + "*")):
        pid_text = os.path.basename(path)[len(DIR_PREFIX) :].split("-", 1)[0]
        if pid_text.isdigit() and not pid_alive(int(pid_text)):
            shutil.rmtree(path, ignore_errors=True)


class MetricsPort:
    """WSGI dispatch by the port a request arrived on (the listening socket's own,
    not the Host header a client may forge): ``/metrics`` on the metrics port, the
    app everywhere else."""

    def __init__(self, app: Callable[..., Iterable[bytes]], port: int, path: str) -> None:
        self.app = app
        self.port = port
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry, path=path)
        self.metrics = make_wsgi_app(registry)

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        sock = environ.get("gunicorn.socket")
        try:
            on_metrics_port = sock is not None and sock.getsockname()[1] == self.port
        except OSError:
            on_metrics_port = False
        if not on_metrics_port:
            return self.app(environ, start_response)
        if environ.get("PATH_INFO") != "/metrics":
            start_response("404 Not Found", [("Content-Type", "text/plain")])
            return [b"only /metrics here\n"]
        return self.metrics(environ, start_response)


@contextlib.contextmanager
def gunicorn_metrics(app: Flask, options: dict[str, Any]) -> Iterator[str | None]:
    """Around a gunicorn run: multiprocess mode, the metrics port, and cleanup.

    Adds the metrics port to ``options["bind"]`` and a ``child_exit`` hook, and
    wraps ``app``. Yields this start's directory of files, or None when
    Prometheus is off.
    """
    conf = get_config().metrics
    if not conf.prometheus_on:
        yield None
        return
    host, port = conf.prometheus_host, conf.webserver_port
    _check_port(host, port)
    parent = tempfile.gettempdir()
    _remove_stale_dirs(parent)
    path = tempfile.mkdtemp(prefix=f"{DIR_PREFIX}{os.getpid()}-", dir=parent)
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = path
    # Values made from now on (at each worker's first request) live in the files.
    previous = values.ValueClass
    values.ValueClass = values.MultiProcessValue()
    options["bind"] = [options["bind"], f"{host}:{port}"]
    app.wsgi_app = MetricsPort(app.wsgi_app, port, path)  # type: ignore[method-assign]

    def child_exit(_arbiter: Any, worker: Any) -> None:
        multiprocess.mark_process_dead(worker.pid, path)

    options["child_exit"] = child_exit
    log.info("webserver metrics at http://%s:%s/metrics", host, port)
    master = os.getpid()
    try:
        yield path
    finally:
        # A worker, forked inside this block, leaves through it too: only the master cleans.
        if os.getpid() == master:
            values.ValueClass = previous
            os.environ.pop("PROMETHEUS_MULTIPROC_DIR", None)
            shutil.rmtree(path, ignore_errors=True)
