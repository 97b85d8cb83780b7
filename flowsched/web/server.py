"""Serving the app: gunicorn in production, Flask's dev server with ``--debug``.

gunicorn runs in the foreground through its Python API, with ``bind``,
``workers`` and ``timeout`` from ``[webserver]``. The app is built once in
the master (``preload_app``) so a broken config fails at start, and every
worker then opens its own database connections (the engine is reset after
fork). SIGTERM makes gunicorn finish in-flight requests and stop.
"""

from __future__ import annotations

import errno
import ipaddress
import logging
import os
import secrets
import signal
import socket
import subprocess
from pathlib import Path
from typing import Any

from flask import Flask
from gunicorn.app.base import BaseApplication

from flowsched.config import flowsched_home, get_config
from flowsched.exceptions import FlowschedError
from flowsched.metrics.web import gunicorn_metrics
from flowsched.processes import (
    kill_group,
    set_parent_death_signal,
    spawn_flowsched,
    stop_process,
)
from flowsched.secret_files import write_secret_file
from flowsched.tls import web_server_files
from flowsched.web.app import create_app
from flowsched.web.users import count_users, create_user

log = logging.getLogger(__name__)

STANDALONE_ADMIN = "admin"
STANDALONE_PASSWORD_FILE = "standalone_admin_password.txt"


class GunicornServer(BaseApplication):  # type: ignore[misc]
    """gunicorn's Arbiter around an already-built app."""

    def __init__(self, app: Flask, options: dict[str, Any]) -> None:
        self.application = app
        self.options = options
        super().__init__()

    def load_config(self) -> None:
        for key, value in self.options.items():
            if key in self.cfg.settings and value is not None:
                self.cfg.set(key, value)

    def load(self) -> Flask:
        return self.application


def secret_key() -> str:
    """``core.secret_key``; without one, a key for this server's lifetime (sessions end at
    restart, and every gunicorn worker shares it because the app is built before fork)."""
    key = get_config().core.secret_key
    if not key:
        log.warning("core.secret_key is empty: sessions will not survive a webserver restart")
        key = secrets.token_hex(32)
    return key


def gunicorn_options(bind: str | None = None, workers: int | None = None) -> dict[str, Any]:
    conf = get_config().webserver
    cert, key = web_server_files() or (None, None)
    return {
        "certfile": cert,  # every listener, the metrics port too, serves HTTPS
        "keyfile": key,
        "bind": bind or conf.bind,
        "workers": workers or conf.workers,
        "worker_class": "gthread",
        "threads": 4,
        "timeout": conf.timeout,
        "graceful_timeout": 30,
        "preload_app": True,
        "accesslog": "-",
        "errorlog": "-",
        "proc_name": "flowsched-webserver",
        "control_socket_disable": True,  # gunicorn 24+: one shared ~/.gunicorn path otherwise
        "post_fork": _worker_dies_with_master,
    }


def _worker_dies_with_master(_server: Any, worker: Any) -> None:
    """gunicorn's post_fork hook: a worker whose master was killed (even kill -9) dies
    at once, instead of serving on, holding the port, until it notices."""
    set_parent_death_signal(signal.SIGKILL, parent=worker.ppid)


def debug_host(host: str) -> str:
    """Where ``--debug`` listens: loopback only, whatever was asked.

    The Werkzeug debugger runs Python typed into a browser page; on any other
    address it would be a remote shell for whoever reaches the port.
    """
    if host == "localhost":
        return host
    try:
        if ipaddress.ip_address(host.strip("[]")).is_loopback:
            return host.strip("[]")
    except ValueError:
        pass
    log.warning("--debug listens on 127.0.0.1 only, not on %r: the debugger runs code", host)
    return "127.0.0.1"


def serve(bind: str | None = None, workers: int | None = None, debug: bool = False) -> None:
    """Run in the foreground until SIGTERM/SIGINT."""
    app = create_app(secret_key=secret_key())
    if debug:
        host, _, port = (bind or get_config().webserver.bind).rpartition(":")
        app.run(host=debug_host(host), port=int(port), debug=True, use_reloader=False)
        return
    options = gunicorn_options(bind, workers)
    with gunicorn_metrics(app, options):
        GunicornServer(app, options).run()


def check_bind(bind: str) -> tuple[str, int]:
    """(host, port) of ``bind`` after checking this process could listen there now.

    gunicorn alone would retry for seconds and exit with a line lost among
    others; this names the setting and the likely cause.
    """
    host, _, port_text = bind.rpartition(":")
    try:
        port = int(port_text)
    except ValueError:
        raise FlowschedError(f"[webserver] bind must be host:port, got {bind!r}") from None
    try:
        with socket.create_server((host or "0.0.0.0", port), reuse_port=False) as probe:
            probe.close()
    except OSError as exc:
        raise FlowschedError(
            f"the webserver cannot listen on {bind} ([webserver] bind): "
            f"{os.strerror(exc.errno) if exc.errno else exc}"
            + (
                " (another webserver or flowsched standalone is running?)"
                if exc.errno == errno.EADDRINUSE
                else ""
            )
        ) from None
    return host or "0.0.0.0", port


class BackgroundServer:
    """A webserver child process, for ``flowsched standalone``."""

    def __init__(self, process: subprocess.Popen[bytes], bind: str) -> None:
        self.process = process
        self.bind = bind

    def stop(self, timeout: float = 30.0) -> None:
        """SIGTERM (gunicorn finishes in-flight requests), then whatever is left of its group."""
        stop_process(self.process, timeout=timeout)
        kill_group(self.process.pid)


def start_in_background(bind: str | None = None, workers: int = 2) -> BackgroundServer:
    """Start ``flowsched webserver`` as a child process (dying with this one) and return.

    A process rather than a thread: gunicorn's master needs the main thread for
    its signals, and a slow page must never stall the scheduler. It gets its own
    process group, so a terminal's Ctrl-C reaches only the parent, which stops it.
    """
    bind = bind or get_config().webserver.bind
    args = ["webserver", "--bind", bind, "--workers", str(workers)]
    return BackgroundServer(spawn_flowsched(args, process_group=0), bind)


def ensure_standalone_admin(home: Path | None = None) -> tuple[str, Path] | None:
    """Create user ``admin`` with a random password if there are no users yet.

    The password goes to ``$FLOWSCHED_HOME/standalone_admin_password.txt``,
    created with mode 0600 (never readable by others, not even for a moment), as
    a one-machine setup has nobody to ask. Returns the username and that file
    when it created the user, else None.
    """
    if count_users() > 0:
        return None
    password = secrets.token_urlsafe(12)
    create_user(STANDALONE_ADMIN, password, "admin")
    path = (home or flowsched_home()) / STANDALONE_PASSWORD_FILE
    write_secret_file(path, password + "\n")
    return STANDALONE_ADMIN, path
