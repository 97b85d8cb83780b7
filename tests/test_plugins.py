"""Plugins: loaded from the folder and entry points, fingerprinted, checked on workers."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import flowsched
from flowsched import operations
from flowsched.plugins import load_plugins
from tests.harness import drive, parse, run_finished, ti_states, tries
from tests.test_cli import flowsched as run_cli

EXAMPLES = Path(flowsched.__file__).parent
PLUGIN = EXAMPLES / "example_plugins" / "greeting_plugin.py"
DAG = EXAMPLES / "example_dags" / "example_plugin.py"


def install_example(home) -> None:
    shutil.copy(PLUGIN, home.plugins / PLUGIN.name)
    shutil.copy(DAG, home.dags / DAG.name)


def test_plugin_operator_and_macro_run_and_are_recorded(home):
    install_example(home)
    parse()
    run = operations.trigger_dag("example_plugin", run_id="p1")
    drive(run_finished("example_plugin"))
    (try_,) = tries("example_plugin", "greet")
    assert try_.state == "success"
    day = run.logical_date.astimezone(flowsched.timezone.default_timezone()).date().isoformat()
    assert try_.rendered_fields == {"name": f"EXAMPLE_PLUGIN! on {day}"}
    log = next((home.logs / "dag_id=example_plugin").rglob("attempt=1.log")).read_text()
    assert f"Hello, EXAMPLE_PLUGIN! on {day}" in log


def test_plugins_loaded_under_another_home_are_not_served_to_this_one(sqlite_home, tmp_path):
    # The web app (or anything else) loaded plugins in this process under another
    # configuration first: the cached registry must not stand for this home's.
    other = tmp_path / "other-plugins"
    other.mkdir()
    sqlite_home.configure(core={"plugins_folder": str(other)})
    assert "shout" not in load_plugins().macros
    sqlite_home.configure(core={"plugins_folder": str(sqlite_home.plugins)})
    install_example(sqlite_home)
    assert "shout" in load_plugins().macros


def test_cli_lists_plugins_and_reports_broken_ones(sqlite_home):
    install_example(sqlite_home)
    (sqlite_home.plugins / "broken_plugin.py").write_text("import does_not_exist\n")
    result = run_cli(sqlite_home, "plugins", check=False)
    assert result.returncode == 1
    assert "greeting" in result.stdout and "greeting_plugin.py" in result.stdout
    assert "GreetOperator" in result.stdout and "shout" in result.stdout
    assert "failed to load broken_plugin.py" in result.stderr
    assert "ModuleNotFoundError: No module named 'does_not_exist'" in result.stderr
    # The broken plugin takes nothing else down: the DAG using the good one parses.
    parse()


def test_changed_plugin_is_a_new_version_and_stale_copies_refuse_to_run(home):
    install_example(home)
    parse()
    operations.trigger_dag("example_plugin", run_id="p2")
    plugin = home.plugins / PLUGIN.name
    # The plugin changes on this "worker" after the task was queued with the old sha.
    from sqlalchemy import select

    from flowsched.db.engine import session_scope
    from flowsched.db.models import DagVersion
    from flowsched.scheduler.loop import Scheduler
    from tests.harness import LocalExecutor

    with Scheduler(LocalExecutor(1), run_dag_processor=False) as scheduler:
        scheduler.start_queued_runs()
        workloads = scheduler.schedule_runs()
        assert [w.task_id for w in workloads] == ["greet"]
        assert list(workloads[0].plugins) == ["greeting_plugin.py"]
        plugin.write_text(plugin.read_text().replace('"Hello"', '"Bonjour"'))
        for workload in workloads:
            scheduler.executor.queue(workload)
        while ti_states("example_plugin")["greet"][0] in ("queued", "running"):
            scheduler.executor.wakeup.wait(0.2)
            scheduler.run_once()
    first = tries("example_plugin", "greet")[0]
    assert first.state == "failed"
    assert "plugin file greeting_plugin.py differs on worker" in first.error
    parse()  # the DAG processor sees the new plugin: a new version
    with session_scope() as session:
        assert len(session.scalars(select(DagVersion)).all()) == 2
    operations.clear_tasks("example_plugin", run_id="p2")
    drive(run_finished("example_plugin"))
    assert ti_states("example_plugin")["greet"][0] == "success"
    log = (next((home.logs / "dag_id=example_plugin").rglob("attempt=2.log"))).read_text()
    assert "Bonjour" in log


def test_entry_point_plugins_load(sqlite_home, tmp_path, monkeypatch):
    site = tmp_path / "site"
    dist = site / "acme_flowsched-1.0.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: acme-flowsched\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text(
        "[flowsched.plugins]\nacme = acme_plugin:AcmePlugin\nbad = acme_missing:Nope\n"
    )
    (site / "acme_plugin.py").write_text(
        "from flowsched.plugins import FlowschedPlugin\n"
        "class AcmePlugin(FlowschedPlugin):\n"
        "    name = 'acme'\n"
        "    macros = {'answer': lambda: 42}\n"
    )
    monkeypatch.syspath_prepend(str(site))
    registry = load_plugins(reload=True)
    try:
        names = {p.name: p.source for p in registry.plugins}
        assert names["acme"].startswith("entry point acme")
        assert registry.macros["answer"]() == 42
        assert any("acme_missing" in source for source in registry.errors)
    finally:
        sys.modules.pop("acme_plugin", None)
        load_plugins(reload=True)


VIEW_PLUGIN = """
from flask import Blueprint
from flowsched.plugins import FlowschedPlugin

bp = Blueprint("hello_view", __name__, url_prefix="/plugins/hello")


@bp.route("/")
def hello():
    return "hello from a plugin view"


class HelloPlugin(FlowschedPlugin):
    name = "hello"
    blueprints = [bp]
"""


def test_webserver_serves_plugin_views_and_shows_broken_plugins(sqlite_home):
    from tests.web.conftest import make_web

    (sqlite_home.plugins / "hello_plugin.py").write_text(VIEW_PLUGIN)
    (sqlite_home.plugins / "broken_plugin.py").write_text("raise RuntimeError('bad plugin')\n")
    load_plugins(reload=True)
    try:
        web = make_web(sqlite_home)
        anonymous = web.app.test_client().get("/plugins/hello/")
        assert anonymous.status_code in (302, 401)  # behind the login like every page
        viewer = web.client("viewer")
        assert viewer.get("/plugins/hello/").text == "hello from a plugin view"
        page = viewer.get("/dags").text
        assert "1 plugin failed to load" in page and "RuntimeError: bad plugin" in page
    finally:
        sys.modules.pop("hello_plugin", None)
        load_plugins(reload=True)
