"""One engine per process, safe across fork, with the settings each backend needs.

SQLite runs in WAL mode with a busy timeout so the scheduler and task processes
can write at once. MySQL/MariaDB runs at READ COMMITTED: the scheduler's
``FOR UPDATE SKIP LOCKED`` queries and short transactions want no gap locks.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from flowsched.config import get_config
from flowsched.exceptions import DatabaseUnavailable
from flowsched.outage import Outage, retry_through
from flowsched.tls import mysql_connect_args

T = TypeVar("T")

_engine: Engine | None = None
_sessionmaker: sessionmaker[Session] | None = None
_read_sessionmaker: sessionmaker[Session] | None = None


def safe_url(url: str) -> str:
    """The URL with its password hidden, for messages and logs."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return "<unparseable database URL>"


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


READ_ONLY = "flowsched_read_only"

# Set on a pooled connection's record when session_scope ends its transaction itself
# (COMMIT or ROLLBACK), cleared at each checkout: see _reset_on_return.
TRANSACTION_ENDED = "flowsched_transaction_ended"


def _checked_out(_dbapi_connection: Any, record: Any, _proxy: Any) -> None:
    record.info[TRANSACTION_ENDED] = False


def _reset_on_return(engine: Engine) -> Callable[..., None]:
    """SQLAlchemy's reset of a connection returned to the pool (a ROLLBACK), except
    after a transaction :func:`session_scope` has just committed or rolled back: the
    pool cannot tell (a Session closes its connection once the transaction is over),
    and would send a ROLLBACK, a round trip, after every COMMIT."""

    def reset(dbapi_connection: Any, record: Any, state: Any) -> None:
        if state.transaction_was_reset or not state.asyncio_safe:
            return
        if record is not None and record.info.get(TRANSACTION_ENDED):
            return
        engine.dialect.do_rollback(dbapi_connection)

    return reset


def _own_reset(engine: Engine) -> Engine:
    event.listen(engine, "checkout", _checked_out)
    event.listen(engine, "reset", _reset_on_return(engine))
    return engine


def _sqlite_begin(conn: Any) -> None:
    """Writers take SQLite's write lock up front (no deadlocking lock upgrades);
    read-only sessions start a plain deferred transaction and never wait for it."""
    if conn.get_execution_options().get(READ_ONLY):
        conn.exec_driver_sql("BEGIN")
    else:
        conn.exec_driver_sql("BEGIN IMMEDIATE")


def build_engine(url: str) -> Engine:
    conf = get_config().database
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(
            url,
            connect_args={"timeout": 30, "check_same_thread": False},
            pool_pre_ping=True,
            pool_reset_on_return=None,  # _reset_on_return does it
        )
        event.listen(engine, "connect", _sqlite_pragmas)
        # Let SQLAlchemy, not pysqlite, open transactions, so BEGIN IMMEDIATE works.
        event.listen(engine, "connect", lambda conn, _r: setattr(conn, "isolation_level", None))
        event.listen(engine, "begin", _sqlite_begin)
        return _own_reset(engine)
    connect_args: dict[str, Any] = {}
    if parsed.get_backend_name() == "mysql":
        connect_args["connect_timeout"] = conf.connect_timeout
        connect_args.update(mysql_connect_args())
    engine = create_engine(
        url,
        pool_size=conf.pool_size,
        max_overflow=conf.pool_size,
        pool_recycle=conf.pool_recycle,
        pool_pre_ping=True,
        pool_reset_on_return=None,  # _reset_on_return does it
        isolation_level="READ COMMITTED",
        connect_args=connect_args,
    )
    return _own_reset(engine)


def get_engine() -> Engine:
    global _engine, _sessionmaker, _read_sessionmaker
    if _engine is None:
        _engine = build_engine(get_config().database.sql_alchemy_conn)
        if _try_process:
            _tune_for_try(_engine.pool)
        _sessionmaker = sessionmaker(_engine, expire_on_commit=False)
        _read_sessionmaker = sessionmaker(
            _engine.execution_options(**{READ_ONLY: True}), expire_on_commit=False
        )
    return _engine


def reset_engine() -> None:
    """Forget the engine after a config change; the next use builds a new one."""
    global _engine, _sessionmaker, _read_sessionmaker
    if _engine is not None:
        _engine.dispose(close=False)
    _engine = None
    _sessionmaker = None
    _read_sessionmaker = None


# Connection pools inherited through fork: kept referenced, never used, never closed.
_inherited: list[Any] = []


def _after_fork_in_child() -> None:
    """A forked child must neither use nor close the parent's connections.

    Closing them (even by garbage collection after ``dispose(close=False)``)
    sends MySQL's COM_QUIT on sockets the parent still uses and kills its
    sessions. So the child parks the inherited pool and gives the engine a
    fresh, empty one: it keeps the engine's compiled-statement cache and
    dialect set-up, which a task process would otherwise rebuild every try.
    """
    if _engine is not None:
        _inherited.append(_engine.pool)
        _engine.pool = _engine.pool.recreate()


os.register_at_fork(after_in_child=_after_fork_in_child)

# A try's process uses a connection for seconds (claim, result): one opened for it
# needs no ping, and one that has sat idle through a long task is replaced instead.
TRY_CONNECTION_RECYCLE = 10.0


def for_a_try_process() -> None:
    """Set this (forked) process's connections up for a try: no ``pool_pre_ping`` (a
    round trip per checkout), but a connection older than ``TRY_CONNECTION_RECYCLE``
    seconds is reopened at checkout. A try's claim and result (and a short task's
    XCom) then share one connection with no ping; the result of a long task gets a
    fresh connection, as a ping would have found it gone after a database restart
    (a failure meanwhile is an outage, retried: flowsched.task_runner)."""
    global _try_process
    _try_process = True
    if _engine is not None:
        _tune_for_try(_engine.pool)


_try_process = False


def _tune_for_try(pool: Any) -> None:
    pool._pre_ping = False
    pool._recycle = TRY_CONNECTION_RECYCLE


def new_session(read_only: bool = False) -> Session:
    get_engine()
    factory = _read_sessionmaker if read_only else _sessionmaker
    assert factory is not None
    return factory()


@contextmanager
def session_scope(read_only: bool = False) -> Iterator[Session]:
    """A transaction: committed on success, rolled back on error.

    ``read_only`` sessions are for reads only: on SQLite they do not take the
    write lock, so pages, listings and the scheduler's "anything to do?"
    checks never queue behind task processes that are writing.
    """
    session = new_session(read_only)
    try:
        yield session
        _ending(session)
        session.commit()
    except OperationalError as exc:
        _ending(session)
        session.rollback()
        unavailable = _unavailable(exc)
        if unavailable is None:
            raise
        raise unavailable from exc
    except BaseException:
        _ending(session)
        session.rollback()
        raise
    finally:
        session.close()


def _ending(session: Session) -> None:
    """Note that this session ends its connection's transaction itself (COMMIT or
    ROLLBACK), so the pool need not roll it back again (see _reset_on_return)."""
    if session.in_transaction():
        with contextlib.suppress(Exception):
            session.connection().info[TRANSACTION_ENDED] = True


# Connection-level failures: the server is down, restarting or unreachable.
_OUTAGE_MARKERS = (
    "Can't connect",
    "Lost connection",
    "gone away",
    "Connection refused",
    "Connection reset",
    "Server shutdown in progress",
    "unable to open",
)
# Also unavailable, but a wrong config rather than weather: not waited out.
_MISCONFIGURED_MARKERS = ("Unknown database", "Access denied")


def _unavailable(exc: OperationalError) -> DatabaseUnavailable | None:
    text = str(exc.orig) if exc.orig is not None else str(exc)
    if any(marker in text for marker in _OUTAGE_MARKERS + _MISCONFIGURED_MARKERS):
        url = safe_url(get_config().database.sql_alchemy_conn)
        return DatabaseUnavailable(f"cannot reach the metadata database {url}: {text}")
    return None


def dialect_name() -> str:
    return get_engine().dialect.name


def is_db_outage(exc: BaseException) -> bool:
    """Whether ``exc`` means the metadata database is unreachable for now (weather),
    as opposed to a bug or a wrong config (an unknown database, a refused password)."""
    if isinstance(exc, DatabaseUnavailable):
        text = str(exc)
    elif isinstance(exc, DBAPIError):
        if exc.connection_invalidated:
            return True
        text = str(exc.orig) if exc.orig is not None else str(exc)
    else:
        return False
    if any(marker in text for marker in _MISCONFIGURED_MARKERS):
        return False
    return any(marker in text for marker in _OUTAGE_MARKERS)


def db_outage(logger: Any, *, max_delay: float | None = None) -> Outage:
    """An :class:`~flowsched.outage.Outage` of the metadata database, for one component."""
    conf = get_config()
    url = safe_url(conf.database.sql_alchemy_conn)
    extra = {} if max_delay is None else {"max_delay": max_delay}
    return Outage(f"metadata database {url}", conf.core.outage_tolerance, logger, **extra)


def with_db_retry(action: Callable[[], T], outage: Outage, stop: Any = None) -> T:
    """``action()`` (which opens its own sessions), retried through a database outage."""
    return retry_through(action, outage, is_db_outage, stop)
