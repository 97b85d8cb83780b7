"""One engine per process, safe across fork, with the settings each backend needs.

SQLite runs in WAL mode with a busy timeout so the scheduler and task processes
can write at once. MySQL/MariaDB runs at READ COMMITTED: the scheduler's
``FOR UPDATE SKIP LOCKED`` queries and short transactions want no gap locks.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import Any, NamedTuple, TypeVar

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.exc import DBAPIError, DisconnectionError, OperationalError
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import PoolProxiedConnection
from sqlalchemy.sql.expression import Executable

from flowsched.config import get_config
from flowsched.exceptions import DatabaseUnavailable
from flowsched.outage import Outage, retry_through
from flowsched.tls import mysql_connect_args

T = TypeVar("T")
log = logging.getLogger(__name__)

_engine: Engine | None = None
_sessionmaker: sessionmaker[Session] | None = None
_read_sessionmaker: sessionmaker[Session] | None = None


@functools.lru_cache(maxsize=16)
def safe_url(url: str) -> str:
    """The URL with its password hidden, for messages and logs (parsed once per URL:
    every try's outage handler names it)."""
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
    record.info.pop(COMMIT_SENT, None)


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


# A connection back in the pool for less than this (seconds) is not pinged when it is
# checked out again: it has just worked. One idle longer is pinged first, and replaced
# if the server went away meanwhile (a restart, a network timeout), as with SQLAlchemy's
# ``pool_pre_ping``, which pings at every checkout: a round trip for each of the
# several short transactions of each scheduler pass, web request and try.
PING_AFTER_IDLE = 1.0
# On a pooled connection's record: when it was opened or last returned (time.monotonic()).
IDLE_SINCE = "flowsched_idle_since"


def send_ping(dialect: Any, dbapi_connection: Any) -> bool:
    """One ping (a round trip): whether the server answered (bench/roundtrips.py counts it)."""
    return bool(dialect.do_ping(dbapi_connection))


def _ping_when_idle(engine: Engine) -> Engine:
    """Check a connection at checkout only after it sat idle (:data:`PING_AFTER_IDLE`).

    A connection the server dropped is raised as a ``DisconnectionError``: the pool
    then discards it and checks out another (a new one), as pre-ping does. One that
    failed within the idle time (a server restarted a moment ago) fails its statement
    instead, which its caller takes as an outage and retries, as any statement sent
    while the server is down.
    """
    dialect = engine.dialect

    def idle_from_now(_dbapi_connection: Any, record: Any, *_: Any) -> None:
        record.info[IDLE_SINCE] = time.monotonic()

    def check(dbapi_connection: Any, record: Any, _proxy: Any) -> None:
        if _try_process:
            return  # a try's connections: see for_a_try_process
        if time.monotonic() - record.info.get(IDLE_SINCE, 0.0) < PING_AFTER_IDLE:
            return
        try:
            alive = send_ping(dialect, dbapi_connection)
        except dialect.loaded_dbapi.Error as exc:
            if dialect.is_disconnect(exc, dbapi_connection, None):
                raise DisconnectionError(f"connection lost while idle: {exc}") from exc
            raise
        if not alive:
            raise DisconnectionError("connection lost while idle")

    event.listen(engine, "connect", idle_from_now)
    event.listen(engine, "checkin", idle_from_now)
    event.listen(engine, "checkout", check)
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
            pool_reset_on_return=None,  # _reset_on_return does it
        )
        event.listen(engine, "connect", _sqlite_pragmas)
        # Let SQLAlchemy, not pysqlite, open transactions, so BEGIN IMMEDIATE works.
        event.listen(engine, "connect", lambda conn, _r: setattr(conn, "isolation_level", None))
        event.listen(engine, "begin", _sqlite_begin)
        return _own_reset(engine)
    connect_args: dict[str, Any] = {}
    mysql = parsed.get_backend_name() == "mysql"
    if mysql:
        connect_args["connect_timeout"] = conf.connect_timeout
        connect_args.update(mysql_connect_args())
    engine = create_engine(
        url,
        pool_size=conf.pool_size,
        max_overflow=conf.pool_size,
        pool_recycle=conf.pool_recycle,
        pool_reset_on_return=None,  # _reset_on_return does it
        isolation_level="READ COMMITTED",
        connect_args=connect_args,
    )
    if mysql and parsed.get_driver_name() == "mysqldb":
        _sends_at_once(engine)
    return _ping_when_idle(_own_reset(engine))


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
    _close_spare()
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
    A try's child forked in :func:`handing_over` gets instead the pool holding
    the connection opened for it; any other child parks that one too.
    """
    global _spare, _handing_over
    if _engine is not None:
        _inherited.append(_engine.pool)
        if _spare is not None and _handing_over:
            # The try's fork (handing_over): its connection, opened for it, is its own.
            _engine.pool = _spare.pool
        else:
            if _spare is not None:
                _inherited.append(_spare.pool)
            _engine.pool = _engine.pool.recreate()
    _spare, _handing_over = None, False


os.register_at_fork(after_in_child=_after_fork_in_child)

# A try's process uses a connection for seconds (claim, result): one opened for it
# needs no ping, and one that has sat idle through a long task is replaced instead.
TRY_CONNECTION_RECYCLE = 10.0


def for_a_try_process() -> None:
    """Set this (forked) process's connections up for a try: never pinged at checkout
    (see :func:`_ping_when_idle`), but a connection older than ``TRY_CONNECTION_RECYCLE``
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
    pool._recycle = TRY_CONNECTION_RECYCLE


# --- a transition and its COMMIT in one send (MariaDB/MySQL, a try's connection) -----

# On a pooled connection's record: opened with MULTI_STATEMENTS, for a try's process
# (the only connections that have it: nothing else sends statements at once).
SENDS_AT_ONCE = "flowsched_sends_at_once"
# On a pooled connection's record: the last send ended its transaction (its COMMIT
# went with it), and nothing was sent since: a commit or rollback now sends nothing.
COMMIT_SENT = "flowsched_commit_sent"
# An execution option: the send's statements' row counts are appended to this list.
_ROW_COUNTS = "flowsched_row_counts"

# Set while a process that forks tries opens the connection it hands to its next try.
_opening_for_a_try: ContextVar[bool] = ContextVar("flowsched_opening_for_a_try", default=False)


def _sends_at_once(engine: Engine) -> None:
    """Let a try's connections send several statements at once (:func:`send_at_once`)."""
    event.listen(engine, "do_connect", _multi_statements)
    event.listen(engine, "do_execute", _execute_at_once)
    event.listen(engine, "before_cursor_execute", _transaction_goes_on)
    dialect = engine.dialect
    commit, rollback = dialect.do_commit, dialect.do_rollback

    def do_commit(dbapi_connection: Any) -> None:
        if not commit_sent(dbapi_connection):
            commit(dbapi_connection)

    def do_rollback(dbapi_connection: Any) -> None:
        if not commit_sent(dbapi_connection):
            rollback(dbapi_connection)

    dialect.do_commit = do_commit  # type: ignore[method-assign]
    dialect.do_rollback = do_rollback  # type: ignore[method-assign]


def commit_sent(connection: Any) -> bool:
    """Whether ``connection`` (a pooled DBAPI connection or an engine Connection) has
    no transaction open on the server because its last send committed it."""
    if not isinstance(connection, PoolProxiedConnection | Connection):
        return False  # a bare DBAPI connection (the pool's own reset)
    try:
        return bool(connection.info.get(COMMIT_SENT))
    except NotImplementedError:
        return False  # the dialect's first look at a new connection: no pool entry yet


def _multi_statements(_dialect: Any, record: Any, _cargs: Any, cparams: dict[str, Any]) -> None:
    if _try_process or _opening_for_a_try.get():
        from MySQLdb.constants import CLIENT

        cparams["client_flag"] = cparams.get("client_flag", 0) | CLIENT.MULTI_STATEMENTS
        if record is not None:
            record.info[SENDS_AT_ONCE] = True


def _transaction_goes_on(conn: Any, *_: Any) -> None:
    """A statement after a send that committed starts a transaction: it must be ended."""
    conn.info.pop(COMMIT_SENT, None)


def _execute_at_once(cursor: Any, statement: str, parameters: Any, context: Any) -> bool | None:
    counts = context.execution_options.get(_ROW_COUNTS)
    if counts is None:
        return None  # SQLAlchemy's own execute
    cursor.execute(statement, parameters)
    counts.append(cursor.rowcount)
    # Each statement's result in turn: an error in a later one raises here (the server
    # stops at it, so the COMMIT after it is not run), as SQLAlchemy's error.
    while cursor.nextset() is not None:
        counts.append(cursor.rowcount)
    return True


def send_at_once(
    session: Session,
    statements: Sequence[tuple[Executable, Mapping[str, Any]]],
    *,
    prepare: bool = False,
) -> list[int] | None:
    """Send ``statements`` and a COMMIT as ONE round trip on this session's connection:
    each statement's row count (matched rows), in order. None, with nothing sent, where
    the connection cannot (SQLite, or a connection not opened for a try's process);
    with ``prepare`` the statements are compiled for it all the same (a process that
    forks tries prepares them once for all its tries: see ``lifecycle.warm_up``).

    Each statement is a template whose values are all named bound parameters
    (``bindparam``), given with it: it is compiled once per process, the first time it
    is sent, and each send only orders and converts its values. The values are
    escaped by the driver (never formatted into the SQL), processed by their column
    types as SQLAlchemy would. The server runs the statements in turn and stops at the
    first error, COMMIT included: then this raises SQLAlchemy's error (a lost
    connection is invalidated, not reused) and the caller's rollback undoes what ran.
    After it the session's transaction is over on the server: its commit (or
    rollback) sends nothing, unless a statement is sent in between.
    """
    session.flush()  # anything pending goes before the COMMIT (nothing: sends nothing)
    conn = session.connection()
    at_once = bool(conn.info.get(SENDS_AT_ONCE))
    if not at_once and not prepare:
        return None
    parts: list[str] = []
    values: list[Any] = []
    for statement, params in statements:
        sql, names, processors = _compiled(statement, conn.dialect)
        parts.append(sql)
        for name in names:
            value = params[name]
            values.append(processors[name](value) if name in processors else value)
    if not at_once:
        return None
    parts.append("COMMIT")
    counts: list[int] = []
    conn.exec_driver_sql("; ".join(parts), tuple(values), execution_options={_ROW_COUNTS: counts})
    if len(counts) != len(parts):
        raise RuntimeError(f"sent {len(parts)} statements at once, got {len(counts)} results")
    conn.info[COMMIT_SENT] = True
    return counts[:-1]


# Compiled forms of the statement templates sent at once, by template and dialect:
# compiled once per process that forks tries (lifecycle.warm_up), not once per try.
_at_once_cache: dict[tuple[Any, Executable], tuple[str, tuple[str, ...], dict[str, Any]]] = {}


def _compiled(statement: Executable, dialect: Any) -> tuple[str, tuple[str, ...], dict[str, Any]]:
    """A template as the DBAPI takes it: its SQL with positional placeholders, the
    names of its bound parameters in their order, and their type processors."""
    key = (dialect, statement)
    found = _at_once_cache.get(key)
    if found is None:
        compiled = statement.compile(dialect=dialect)  # type: ignore[attr-defined]
        if "__[POSTCOMPILE_" in compiled.string:
            raise ValueError("a statement sent at once takes no expanding IN list")
        names = tuple(compiled.positiontup or ())
        processors = {
            name: compiled._bind_processors[name]
            for name in names
            if name in compiled._bind_processors
        }
        found = _at_once_cache[key] = (compiled.string, names, processors)
    return found


# --- the connection a forked try starts with ----------------------------------------

# A process that forks tries opens its next try's connection ahead (while the try
# before runs): it is handed over at the fork if younger than this, else replaced.
SPARE_MAX_AGE = TRY_CONNECTION_RECYCLE / 2


class _Spare(NamedTuple):
    pool: Any  # a pool of its own, holding the one connection (checked in)
    dbapi_connection: Any
    opened: float  # time.monotonic()


_spare: _Spare | None = None
_handing_over = False
_spare_failed = float("-inf")  # time.monotonic() of the last attempt that failed


def open_connection_for_next_try() -> None:
    """In a process that forks tries (MariaDB/MySQL): open, unless one is ready and
    young, the connection its next try will start with (:func:`handing_over`), so the
    try sends its claim at once instead of connecting first. Best effort: if the
    database cannot be reached now, the try connects (and waits) itself."""
    global _spare, _spare_failed
    if _engine is None or _engine.dialect.name != "mysql" or _try_process:
        return
    now = time.monotonic()
    if _spare is not None and now - _spare.opened < SPARE_MAX_AGE:
        return
    if now - _spare_failed < SPARE_MAX_AGE:
        return  # the database was unreachable a moment ago: no second wait per try
    _close_spare()
    pool = _engine.pool.recreate()
    _tune_for_try(pool)
    token = _opening_for_a_try.set(True)
    try:
        proxy = pool.connect()
    except Exception as exc:
        _spare_failed = time.monotonic()
        log.debug("no connection ready for the next try: %s", exc)
        return
    finally:
        _opening_for_a_try.reset(token)
    dbapi_connection = proxy.dbapi_connection
    proxy.info[TRANSACTION_ENDED] = True  # nothing to roll back when it goes back
    proxy.close()
    _spare = _Spare(pool, dbapi_connection, time.monotonic())


def _close_spare() -> None:
    """Close the spare connection: still this process's own (never handed over)."""
    global _spare
    if _spare is not None:
        with contextlib.suppress(Exception):
            _spare.pool.dispose()
    _spare = None


@contextmanager
def handing_over() -> Iterator[None]:
    """Around the ``os.fork()`` of a try: the child adopts the connection
    :func:`open_connection_for_next_try` opened (its pool becomes the child's), and
    this process drops its copy without a word to the server: its socket is
    pointed at /dev/null first, so closing it sends no COM_QUIT on the connection
    the child now owns. A connection is never used by two processes. If the fork
    fails, the connection stays here for the next try."""
    global _handing_over, _spare
    open_connection_for_next_try()
    _handing_over = _spare is not None
    owner = os.getpid()
    try:
        yield
    except BaseException:
        _handing_over = False
        raise
    if os.getpid() != owner:
        return  # the child: the connection is its own now (see _after_fork_in_child)
    _handing_over = False
    spare, _spare = _spare, None
    if spare is not None:
        _drop_silently(spare)


def _drop_silently(spare: _Spare) -> None:
    try:
        fd = spare.dbapi_connection.fileno()
    except Exception:
        _inherited.append(spare.pool)  # cannot tell its socket: kept, never closed
        return
    devnull = os.open(os.devnull, os.O_RDWR)
    try:
        os.dup2(devnull, fd)
    finally:
        os.close(devnull)
    with contextlib.suppress(Exception):
        spare.pool.dispose()


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
