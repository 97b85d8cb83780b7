"""The metadata database: migrations, UTC storage, connectivity errors."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta, timezone

import pytest
from sqlalchemy import inspect, select, text

from flowsched.db import migrate
from flowsched.db.engine import get_engine, session_scope
from flowsched.db.models import AuditLog, Pool
from flowsched.exceptions import DatabaseUnavailable

EXPECTED_TABLES = {
    "dag",
    "dag_version",
    "dag_run",
    "task_instance",
    "task_try",
    "task_reschedule",
    "xcom",
    "import_error",
    "job",
    "audit_log",
    "pool",
    "alembic_version",
}


def test_upgrade_creates_schema_and_is_idempotent(home):
    tables = set(inspect(get_engine()).get_table_names())
    assert tables >= EXPECTED_TABLES
    assert migrate.upgrade() == []  # second run: nothing applied
    status = migrate.check()
    assert not status.pending
    assert status.current == migrate.head_revision()
    with session_scope() as session:
        pools = session.scalars(select(Pool)).all()
    assert [(p.name, p.slots) for p in pools] == [("default_pool", 128)]


def test_timestamps_round_trip_as_aware_utc(home):
    shanghai = timezone(timedelta(hours=8))
    moment = datetime(2026, 11, 24, 8, 0, 0, 123456, tzinfo=shanghai)
    with session_scope() as session:
        session.add(AuditLog(created_at=moment, event="probe"))
    with session_scope() as session:
        stored = session.scalar(select(AuditLog.created_at).where(AuditLog.event == "probe"))
    assert stored.tzinfo is UTC
    assert stored == moment  # same instant, microseconds kept on both backends
    assert stored.hour == 0


def test_naive_datetime_is_refused(home):
    with pytest.raises(Exception, match="naive datetime"), session_scope() as session:
        session.add(AuditLog(created_at=datetime(2026, 1, 1), event="naive"))


def test_unreachable_database_names_the_url(sqlite_home, mariadb_server):
    url = f"mysql+mysqldb://nobody:secret@127.0.0.1:{mariadb_server.port}/missing"
    sqlite_home.configure(database={"sql_alchemy_conn": url, "connect_timeout": "2"})
    with pytest.raises(DatabaseUnavailable) as info:
        migrate.upgrade()
    message = str(info.value)
    assert "127.0.0.1" in message and "missing" in message
    assert "secret" not in message  # the password is never printed


def test_empty_database_reports_pending(mariadb_server, tmp_path, monkeypatch):
    from flowsched.config import load_config, set_config
    from flowsched.db.engine import reset_engine

    url = mariadb_server.create_database("pending_check")
    monkeypatch.setenv("FLOWSCHED_HOME", str(tmp_path))
    monkeypatch.setenv("FLOWSCHED__DATABASE__SQL_ALCHEMY_CONN", url)
    set_config(load_config(tmp_path / "none.cfg"))
    reset_engine()
    try:
        status = migrate.check()
        assert status.current is None and status.pending
        assert status.dialect == "mysql"
        applied = migrate.upgrade()
        assert applied[0] == "0001" and applied[-1] == migrate.head_revision()
        assert not migrate.check().pending
    finally:
        reset_engine()
        set_config(None)
        mariadb_server.drop_database("pending_check")


def test_models_and_migrations_describe_the_same_schema(home):
    """A model change without its migration (or the reverse) fails here, on both backends."""
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    from flowsched.db.models import Base

    with get_engine().connect() as connection:
        differences = compare_metadata(MigrationContext.configure(connection), Base.metadata)
    assert differences == []


def test_a_connection_is_pinged_only_after_sitting_idle(mysql_home, monkeypatch):
    """Several short transactions in a row send no ping (pool_pre_ping would send one
    per checkout); a connection idle past PING_AFTER_IDLE is pinged, and one the
    server dropped meanwhile is replaced at checkout: the caller sees no error."""
    from sqlalchemy import create_engine
    from sqlalchemy.pool import NullPool

    from flowsched.config import get_config
    from flowsched.db import engine as db_engine

    pings: list[int] = []
    send = db_engine.send_ping

    def counted(dialect, dbapi_connection):
        pings.append(dbapi_connection.thread_id())
        return send(dialect, dbapi_connection)

    monkeypatch.setattr(db_engine, "send_ping", counted)
    monkeypatch.setattr(db_engine, "PING_AFTER_IDLE", 0.5)

    def connection_id() -> int:
        with session_scope() as session:
            return session.execute(text("SELECT CONNECTION_ID()")).scalar_one()

    first = connection_id()
    for _ in range(5):
        assert connection_id() == first
    assert pings == []

    time.sleep(0.6)
    assert connection_id() == first
    assert pings == [first]

    # Killed by the server while idle: pinged, found dead, replaced at checkout.
    other = create_engine(get_config().database.sql_alchemy_conn, poolclass=NullPool)
    with other.connect() as connection:
        connection.exec_driver_sql(f"KILL CONNECTION {first}")
    other.dispose()
    time.sleep(0.6)
    pings.clear()
    replaced = connection_id()
    assert replaced != first
    assert pings == [first]
