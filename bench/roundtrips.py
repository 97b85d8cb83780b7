"""Count database round trips and CPU time, for the benchmarks' per-try figures.

A round trip is anything that waits for the server: a statement (BEGIN and
COMMIT included when they are sent as statements), a DBAPI ``commit()`` or
``rollback()``, the ping of a connection checked out after sitting idle
(``flowsched.db.engine.send_ping``), and a new connection
(``CONNECT``: its handshake, counted as one though it takes several).
The counts come from SQLAlchemy's own events on every engine, so they see what
the code really sends, in any process that installs the probe.

Tries run in other processes (forked pool processes, Celery workers), so each
counted event is appended, as one line with its process id, to a file shared by
all of them (``O_APPEND`` writes of one line are atomic). The benchmark reads
the file afterwards and leaves out its own process (the scheduler).

Celery workers are separate programs: ``worker_env()`` puts ``bench/_probe`` on
their ``PYTHONPATH``, whose ``sitecustomize`` installs the probe at start-up.
"""

from __future__ import annotations

import os
import resource
from collections import Counter
from pathlib import Path
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import Engine
from sqlalchemy.pool import Pool

from flowsched.db import engine as engine_module
from flowsched.db.engine import TRANSACTION_ENDED, commit_sent

ENV = "FLOWSCHED_BENCH_ROUNDTRIPS"
PROBE_DIR = Path(__file__).resolve().parent / "_probe"

_path: str | None = None
_installed = False


def _note(kind: str) -> None:
    if _path is None:
        return
    try:
        fd = os.open(_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    except FileNotFoundError:
        return  # a benchmark's earlier folder, gone: between two counted runs
    try:
        os.write(fd, f"{os.getpid()} {kind}\n".encode())
    finally:
        os.close(fd)


def _statement(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
    _note(statement.split(None, 1)[0].upper() if statement.strip() else "?")


def _connected(_dbapi_connection: Any, _record: Any) -> None:
    _note("CONNECT")


def _counted_ping(send: Any) -> Any:
    def ping(dialect: Any, dbapi_connection: Any) -> bool:
        _note("PING")
        return send(dialect, dbapi_connection)

    return ping


def _reset(_dbapi_connection: Any, record: Any, state: Any) -> None:
    # flowsched's own reset sends nothing after a transaction it ended (db/engine.py).
    ended = record is not None and record.info.get(TRANSACTION_ENDED)
    if not state.transaction_was_reset and not ended:
        _note("RESET")


def install(path: str | Path) -> None:
    """Count round trips of this process (and of its forks) into ``path``."""
    global _path, _installed
    _path = str(path)
    os.environ[ENV] = _path
    if _installed:
        return
    _installed = True
    event.listen(Engine, "before_cursor_execute", _statement)
    # A COMMIT sent with a transition (engine.send_at_once) was counted with it: the
    # session's commit after it sends nothing.
    event.listen(Engine, "commit", lambda conn: commit_sent(conn) or _note("COMMIT"))
    event.listen(Engine, "rollback", lambda conn: commit_sent(conn) or _note("ROLLBACK"))
    # A connection idle for a while is pinged at checkout (engine.send_ping); the
    # pool's reset-on-return rolls back, unless the transaction already ended (then
    # SQLAlchemy sends nothing).
    engine_module.send_ping = _counted_ping(engine_module.send_ping)
    event.listen(Pool, "connect", _connected)
    event.listen(Pool, "reset", _reset)


def worker_env(env: dict[str, str], path: str | Path) -> dict[str, str]:
    """``env`` for a separate program that should count into ``path`` too."""
    python_path = os.pathsep.join(filter(None, [str(PROBE_DIR), env.get("PYTHONPATH")]))
    return {**env, ENV: str(path), "PYTHONPATH": python_path}


def read(path: str | Path, *, exclude_pid: int | None = None) -> tuple[int, Counter[str]]:
    """(round trips, by kind) counted in ``path``, leaving out ``exclude_pid``."""
    kinds: Counter[str] = Counter()
    try:
        lines = Path(path).read_text().splitlines()
    except FileNotFoundError:
        return 0, kinds
    for line in lines:
        pid, _, kind = line.partition(" ")
        if exclude_pid is not None and int(pid) == exclude_pid:
            continue
        kinds[kind] += 1
    return sum(kinds.values()), kinds


def children_cpu_s() -> float:
    """CPU seconds (user + system) of this process's waited-for descendants."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def self_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def describe(total: int, kinds: Counter[str], tries: int) -> str:
    """ "N round trips per try (a SELECT, b UPDATE, ...)"."""
    if not tries:
        return "no tries"
    parts = ", ".join(f"{count / tries:.1f} {kind}" for kind, count in kinds.most_common())
    return f"{total / tries:.1f} round trips per try ({parts})"
