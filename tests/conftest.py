"""Shared fixtures: a flowsched home per test, on SQLite or on a real MariaDB."""

from __future__ import annotations

import textwrap
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from flowsched.config import load_config, set_config
from flowsched.db.engine import reset_engine
from flowsched.processes import become_subreaper
from tests import leftovers
from tests.servers import MariaDBServer, RedisServer, start_mariadb, start_redis


def pytest_configure(config: pytest.Config) -> None:
    # A plugin rather than conftest hooks: a session fixture's setup hook is
    # the session's, which this folder's conftest does not see.
    config.pluginmanager.register(leftovers, "flowsched-leftovers")


@pytest.fixture(autouse=True)
def _not_a_subreaper_after_the_test() -> Iterator[None]:
    """A test that runs a try in this process (``fork_and_run``) makes it a
    subreaper for good: every later test's orphans would then become zombies of
    the pytest process, never reaped, and look alive to the checks that
    nothing was left behind (test_run_ci failed so in CI)."""
    yield
    become_subreaper(False)


@pytest.fixture(scope="session")
def mariadb_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MariaDBServer]:
    server = start_mariadb(tmp_path_factory.mktemp("mariadb"))
    yield server
    server.stop()


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = start_redis(tmp_path_factory.mktemp("redis"))
    yield server
    server.stop()


class Home:
    """A flowsched home for one test: config, DAGs folder, logs, database."""

    def __init__(self, root: Path, url: str) -> None:
        self.root = root
        self.dags = root / "dags"
        self.logs = root / "logs"
        self.plugins = root / "plugins"
        self.url = url
        for folder in (self.dags, self.logs, self.plugins):
            folder.mkdir(parents=True, exist_ok=True)
        self.config_file = root / "flowsched.cfg"
        self.settings: dict[str, dict[str, str]] = {
            "core": {
                "dags_folder": str(self.dags),
                "plugins_folder": str(self.plugins),
                "parallelism": "4",
                "dagbag_import_timeout": "10",
                # Tests expect a DAG to be scheduled as soon as it is parsed;
                # test_paused_at_creation covers the default (true).
                "dags_are_paused_at_creation": "false",
            },
            "database": {"sql_alchemy_conn": url},
            "logging": {"base_log_folder": str(self.logs)},
            "scheduler": {
                "loop_interval": "0.2",
                "task_heartbeat_interval": "1",
                "shutdown_grace": "20",
            },
        }

    def configure(self, **sections: dict[str, str]) -> None:
        """Update config values and reload them in this process (and for children)."""
        for section, values in sections.items():
            self.settings.setdefault(section, {}).update(values)
        lines = []
        for section, values in self.settings.items():
            lines.append(f"[{section}]")
            lines.extend(f"{key} = {value}" for key, value in values.items())
        self.config_file.write_text("\n".join(lines) + "\n")
        set_config(load_config(self.config_file))
        reset_engine()

    def write_dag(self, name: str, source: str) -> Path:
        path = self.dags / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(source))
        return path

    @property
    def env(self) -> dict[str, str]:
        return {"FLOWSCHED_HOME": str(self.root), "FLOWSCHED_CONFIG": str(self.config_file)}


def _make_home(tmp_path: Path, url: str, monkeypatch: pytest.MonkeyPatch) -> Home:
    home = Home(tmp_path / "home", url)
    for key, value in home.env.items():
        monkeypatch.setenv(key, value)
    home.configure()
    from flowsched.db import migrate

    migrate.upgrade()
    return home


@pytest.fixture
def sqlite_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Home]:
    url = f"sqlite:///{tmp_path / 'flowsched.db'}"
    yield _make_home(tmp_path, url, monkeypatch)
    reset_engine()
    set_config(None)


@pytest.fixture
def mysql_home(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, mariadb_server: MariaDBServer
) -> Iterator[Home]:
    name = f"t_{uuid.uuid4().hex[:12]}"
    url = mariadb_server.create_database(name)
    yield _make_home(tmp_path, url, monkeypatch)
    reset_engine()
    set_config(None)
    mariadb_server.drop_database(name)


@pytest.fixture(params=["sqlite", "mysql"])
def home(request: pytest.FixtureRequest) -> Home:
    """Runs the test once on SQLite and once on a real MariaDB server."""
    return request.getfixturevalue(f"{request.param}_home")


def wait_until(predicate: Callable[[], bool], timeout: float = 30.0, step: float = 0.1) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(step)
    raise AssertionError(f"condition not met within {timeout}s: {predicate}")
