"""``flowsched standalone``: the whole system on one machine, with no set-up.

On first start it creates ``$FLOWSCHED_HOME`` (default ``~/flowsched``) with a
config, a SQLite database, example DAGs and a log folder; then it runs the
scheduler (local executor) in the foreground, with the webserver and the DAG
processor as child processes it watches: one that dies is restarted, a few
times at most, then everything stops with a message. The children die with
it, even when it is killed with ``kill -9``. Ctrl-C stops it: running tasks
finish within ``scheduler.shutdown_grace`` or are marked for retry.
"""

from __future__ import annotations

import contextlib
import logging
import secrets
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path

import click

from flowsched.config import config_path, flowsched_home, load_config, set_config
from flowsched.crypto import generate_key
from flowsched.db.engine import reset_engine
from flowsched.exceptions import FlowschedError
from flowsched.processes import describe_exit, kill_group, spawn_flowsched, stop_process
from flowsched.secret_files import write_secret_file

log = logging.getLogger("flowsched.standalone")

EXAMPLES = Path(__file__).parent / "example_dags"
EXAMPLE_PLUGINS = Path(__file__).parent / "example_plugins"


def initialise_home() -> Path:
    """Create the home folder, config, DAGs and database if missing; idempotent."""
    home = flowsched_home()
    cfg = config_path()
    dags = home / "dags"
    for folder in (home, dags, home / "logs", home / "plugins"):
        folder.mkdir(parents=True, exist_ok=True)
    if not cfg.exists():
        write_secret_file(
            cfg,
            "# Written by `flowsched standalone`; see `flowsched config show --defaults`.\n"
            "[core]\n"
            f"dags_folder = {dags}\n"
            f"plugins_folder = {home / 'plugins'}\n"
            "executor = local\n"
            # A sandbox: its example DAGs (and yours) run without unpausing first.
            "dags_are_paused_at_creation = false\n"
            f"secret_key = {secrets.token_hex(32)}\n"
            f"fernet_key = {generate_key()}\n\n"
            "[database]\n"
            f"sql_alchemy_conn = sqlite:///{home / 'flowsched.db'}\n\n"
            "[logging]\n"
            f"base_log_folder = {home / 'logs'}\n",
        )
        for example in sorted(EXAMPLES.glob("*.py")):
            if example.name != "__init__.py":
                shutil.copy(example, dags / example.name)
        for plugin in sorted(EXAMPLE_PLUGINS.glob("*.py")):
            shutil.copy(plugin, home / "plugins" / plugin.name)
    set_config(load_config())
    reset_engine()
    from flowsched.db import migrate

    migrate.upgrade()
    return home


RESTARTS = 3  # a component restarted more often than this within RESTART_WINDOW stops all
RESTART_WINDOW = 600.0
READY_TIMEOUT = 90.0


class Component:
    """A child process of standalone (webserver, DAG processor), restarted when it dies."""

    def __init__(self, name: str, start: Callable[[], subprocess.Popen[bytes]]) -> None:
        self.name = name
        self._start = start
        self.process: subprocess.Popen[bytes] | None = None
        self.deaths: list[float] = []

    def start(self) -> None:
        self.process = self._start()

    def stop(self) -> None:
        if self.process is not None:
            stop_process(self.process, timeout=30)
            kill_group(self.process.pid)  # gunicorn workers, import children


class Watcher(threading.Thread):
    """Starts standalone's components, restarts one that dies (at most ``RESTARTS`` times in
    ``RESTART_WINDOW`` s), else stops everything with a message saying which and why.

    One thread starts every component and lives until it has stopped them: Linux sends
    the parent-death signal when the *thread* that forked a child ends.
    """

    def __init__(self, components: list[Component], give_up: Callable[[str], None]) -> None:
        super().__init__(name="standalone-watcher")
        self.components = components
        self.give_up = give_up
        self.started = threading.Event()
        self.failure: str | None = None
        self._halt = threading.Event()

    def run(self) -> None:
        try:
            for component in self.components:
                component.start()
            self.started.set()
            while not self._halt.wait(1.0):
                for component in self.components:
                    self._check(component)
        except Exception as exc:
            self.failure = f"flowsched standalone: watching the components failed: {exc}"
            self.give_up(self.failure)
        finally:
            self.started.set()
            for component in reversed(self.components):
                component.stop()

    def _check(self, component: Component) -> None:
        assert component.process is not None
        code = component.process.poll()
        if code is None or self._halt.is_set() or self.failure:
            return
        now = time.monotonic()
        component.deaths = [t for t in component.deaths if now - t < RESTART_WINDOW] + [now]
        kill_group(component.process.pid)
        if len(component.deaths) > RESTARTS:
            self.failure = (
                f"flowsched standalone: the {component.name} {describe_exit(code)} "
                f"{len(component.deaths)} times within {RESTART_WINDOW:g} s; stopping "
                "everything (its output is above)"
            )
            self.give_up(self.failure)
            return
        delay = 2.0 ** (len(component.deaths) - 1)
        log.error(
            "the %s %s; restarting it in %g s (%d of %d)",
            component.name,
            describe_exit(code),
            delay,
            len(component.deaths),
            RESTARTS,
        )
        if not self._halt.wait(delay):
            component.start()

    def stop(self) -> None:
        self._halt.set()
        if self.is_alive():
            self.join()


def wait_listening(host: str, port: int, component: Component, timeout: float) -> None:
    """Until the webserver accepts connections; a clear error if it exits first."""
    target = "127.0.0.1" if host in ("", "0.0.0.0") else host
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        process = component.process
        if process is not None and process.poll() is not None:
            raise FlowschedError(
                f"the webserver {describe_exit(process.returncode)} at start "
                f"(bind {host}:{port}); its output is above"
            )
        with contextlib.suppress(OSError), socket.create_connection((target, port), timeout=1):
            return
        time.sleep(0.2)
    raise FlowschedError(f"the webserver did not listen on {host}:{port} within {timeout:g} s")


def run_standalone() -> None:
    from flowsched.cli.output import setup_logging
    from flowsched.config import get_config
    from flowsched.dag_processor import process_folder
    from flowsched.executors.local import LocalExecutor
    from flowsched.scheduler.loop import Scheduler
    from flowsched.web.server import check_bind, ensure_standalone_admin, start_in_background

    home = initialise_home()
    setup_logging()
    bind = get_config().webserver.bind
    host, port = check_bind(bind)  # before anything starts: a clear error, nothing to undo
    report = process_folder()
    admin = ensure_standalone_admin(home)
    scheduler = Scheduler(LocalExecutor(), run_dag_processor=False)
    webserver = Component("webserver", lambda: start_in_background(bind).process)
    processor = Component(
        "DAG processor", lambda: spawn_flowsched(["dag-processor"], process_group=0)
    )
    watcher = Watcher([webserver, processor], give_up=lambda _: scheduler.stop())
    watcher.start()
    try:
        watcher.started.wait()
        wait_listening(host, port, webserver, READY_TIMEOUT)
        shown_host = "127.0.0.1" if host == "0.0.0.0" else host
        click.echo(f"flowsched standalone: home {home}")
        click.echo(
            f"  DAGs folder: {home / 'dags'} ({report.dags} DAGs, {len(report.errors)} errors)"
        )
        click.echo(f"  logs: {home / 'logs'}")
        click.echo(f"  webserver: http://{shown_host}:{port}/")
        if admin is not None:
            click.echo(f"  login: user '{admin[0]}', password in {admin[1]}")
        click.echo("  try: flowsched dags list; flowsched dags trigger example_etl")
        click.echo("  Ctrl-C stops everything; running tasks finish or are marked for retry.")
        scheduler.run()
    finally:
        watcher.stop()
    if watcher.failure:
        raise FlowschedError(watcher.failure)
