"""The mariadb role's accounts on a real MariaDB: the migration account migrates the schema,
the runtime account (every service's, so every task's) reads and writes data but gets no DDL."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import jinja2
import MySQLdb
import pytest
import yaml

from tests.deploy.conftest import REPO
from tests.servers import MariaDBServer

PRIVILEGES = yaml.safe_load((REPO / "roles" / "mariadb" / "defaults" / "main.yml").read_text())


@pytest.fixture
def accounts(mariadb_server: MariaDBServer) -> Iterator[dict[str, str]]:
    """A database and the role's two accounts from 127.0.0.1, made by its rendered SQL."""
    tag = uuid.uuid4().hex[:8]
    database = f"t_acc_{tag}"
    runtime, migration = f"rt_{tag}", f"mg_{tag}"
    template = jinja2.Template(
        (REPO / "roles" / "mariadb" / "templates" / "flowsched-db.sql.j2").read_text()
    )
    sql = template.render(
        ansible_managed="test",
        mariadb_database=database,
        mariadb_character_set="utf8mb4",
        mariadb_collation="utf8mb4_unicode_ci",
        mariadb_accounts=[
            {
                "role": "runtime",
                "user": runtime,
                "password": "runtime-pass-1'x",
                "hosts": ["127.0.0.1"],
                "privileges": PRIVILEGES["mariadb_user_privileges"],
            },
            {
                "role": "migration",
                "user": migration,
                "password": "migration-pass-2",
                "hosts": ["127.0.0.1"],
                "privileges": PRIVILEGES["mariadb_migration_privileges"],
            },
        ],
    )
    admin = mariadb_server.admin()
    try:
        cursor = admin.cursor()
        for statement in (s.strip() for s in sql.split(";\n")):
            lines = [line for line in statement.splitlines() if not line.startswith("--")]
            if "".join(lines).strip():
                cursor.execute("\n".join(lines))
        base = f"@127.0.0.1:{mariadb_server.port}/{database}?charset=utf8mb4"
        yield {
            "database": database,
            "runtime": f"mysql+mysqldb://{runtime}:runtime-pass-1%27x{base}",
            "migration": f"mysql+mysqldb://{migration}:migration-pass-2{base}",
        }
    finally:
        cursor = admin.cursor()
        cursor.execute(f"DROP DATABASE IF EXISTS `{database}`")
        for user in (runtime, migration):
            cursor.execute(f"DROP USER IF EXISTS '{user}'@'127.0.0.1'")
        admin.close()


def flowsched(url: str, home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "FLOWSCHED_HOME": str(home),
        "FLOWSCHED_CONFIG": str(home / "flowsched.cfg"),
        "FLOWSCHED__DATABASE__SQL_ALCHEMY_CONN": url,
    }
    return subprocess.run(
        [sys.executable, "-m", "flowsched", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def sql_error(url: str, statement: str) -> int | None:
    """The MySQL error number of running statement with the account of url (None: it worked)."""
    import sqlalchemy

    engine = sqlalchemy.create_engine(url)
    try:
        with engine.begin() as connection:
            connection.execute(sqlalchemy.text(statement))
        return None
    except sqlalchemy.exc.DBAPIError as exc:
        assert isinstance(exc.orig, MySQLdb.MySQLError), exc
        return exc.orig.args[0]
    finally:
        engine.dispose()


def test_migration_account_migrates_and_runtime_account_gets_data_only(
    accounts, tmp_path: Path
) -> None:
    # The runtime account cannot create the schema; the migration account can.
    refused = flowsched(accounts["runtime"], tmp_path, "db", "upgrade")
    assert refused.returncode != 0
    upgraded = flowsched(accounts["migration"], tmp_path, "db", "upgrade")
    assert upgraded.returncode == 0, upgraded.stdout + upgraded.stderr
    checked = flowsched(accounts["runtime"], tmp_path, "db", "check")
    assert checked.returncode == 0, checked.stdout + checked.stderr

    runtime = accounts["runtime"]
    # Data: what the services do.
    assert (
        sql_error(runtime, "INSERT INTO pool (name, slots, description) VALUES ('acc', 3, 'x')")
        is None
    )
    assert sql_error(runtime, "UPDATE pool SET slots = 4 WHERE name = 'acc'") is None
    assert sql_error(runtime, "SELECT COUNT(*) FROM task_instance") is None
    assert sql_error(runtime, "DELETE FROM pool WHERE name = 'acc'") is None
    # No DDL (1142: command denied), nothing outside its database (1044).
    assert sql_error(runtime, "CREATE TABLE probe (id INT)") == 1142
    assert sql_error(runtime, "DROP TABLE pool") == 1142
    assert sql_error(runtime, "ALTER TABLE pool ADD COLUMN probe INT") == 1142
    assert sql_error(runtime, "CREATE DATABASE acc_probe") == 1044
