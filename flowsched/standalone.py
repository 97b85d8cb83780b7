"""``flowsched standalone``: the whole system on one machine, with no set-up.

On first start it creates ``$FLOWSCHED_HOME`` (default ``~/flowsched``) with a
config, a SQLite database, example DAGs and a log folder; then it runs the
scheduler (local executor) and DAG processor in the foreground. Ctrl-C stops
it: running tasks finish within ``scheduler.shutdown_grace`` or are marked
for retry.
"""

from __future__ import annotations

import secrets
import shutil
from pathlib import Path

import click

from flowsched.config import config_path, flowsched_home, load_config, set_config
from flowsched.crypto import generate_key
from flowsched.db.engine import reset_engine

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
        cfg.write_text(
            "# Written by `flowsched standalone`; see `flowsched config show --defaults`.\n"
            "[core]\n"
            f"dags_folder = {dags}\n"
            f"plugins_folder = {home / 'plugins'}\n"
            "executor = local\n"
            f"secret_key = {secrets.token_hex(32)}\n"
            f"fernet_key = {generate_key()}\n\n"
            "[database]\n"
            f"sql_alchemy_conn = sqlite:///{home / 'flowsched.db'}\n\n"
            "[logging]\n"
            f"base_log_folder = {home / 'logs'}\n",
            encoding="utf-8",
        )
        cfg.chmod(0o600)
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


def run_standalone() -> None:
    from flowsched.cli.main import setup_logging
    from flowsched.config import get_config
    from flowsched.dag_processor import process_folder
    from flowsched.executors.local import LocalExecutor
    from flowsched.scheduler.loop import Scheduler
    from flowsched.web.server import ensure_standalone_admin, start_in_background

    home = initialise_home()
    setup_logging()
    report = process_folder()
    admin = ensure_standalone_admin(home)
    web = start_in_background()
    host, _, port = get_config().webserver.bind.rpartition(":")
    shown_host = "127.0.0.1" if host in ("", "0.0.0.0") else host
    click.echo(f"flowsched standalone: home {home}")
    click.echo(f"  DAGs folder: {home / 'dags'} ({report.dags} DAGs, {len(report.errors)} errors)")
    click.echo(f"  logs: {home / 'logs'}")
    click.echo(f"  webserver: http://{shown_host}:{port}/")
    if admin is not None:
        click.echo(f"  login: user '{admin[0]}', password in {admin[1]}")
    click.echo("  try: flowsched dags list; flowsched dags trigger example_etl")
    click.echo("  Ctrl-C stops everything; running tasks finish or are marked for retry.")
    try:
        Scheduler(LocalExecutor()).run()
    finally:
        web.stop()
