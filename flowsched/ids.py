"""The one rule for DAG, task and run ids, checked wherever an id is born.

An id becomes a folder name under the log folder and a 250-character column in
the metadata database. SQLite does not enforce column lengths and MariaDB
refuses longer values, so the limit is checked here, before either is reached,
and the same way on every backend. No id may hold '/' or be empty, so an id can
never step out of its log folder.

Run ids also allow ':' and '+': the ones flowsched makes itself carry an ISO
timestamp (``manual__2026-01-01T00:00:00+00:00``), as Airflow's do.
"""

from __future__ import annotations

import re

from flowsched.exceptions import FlowschedError

ID_MAX_LENGTH = 250

_KEY = r"A-Za-z0-9_.\-"
_PATTERNS = {
    "dag_id": re.compile(f"[{_KEY}]+"),
    "task_id": re.compile(f"[{_KEY}]+"),
    "run_id": re.compile(f"[{_KEY}:+]+"),
    # A group's id becomes the prefix of its tasks' ids before a '.', so it has none.
    "group_id": re.compile(r"[A-Za-z0-9_\-]+"),
}
_ALLOWED = {
    "dag_id": "letters, digits, '_', '.', '-'",
    "task_id": "letters, digits, '_', '.', '-'",
    "run_id": "letters, digits, '_', '.', '-', ':', '+'",
    "group_id": "letters, digits, '_', '-'",
}
_SHOWN = 80  # characters of a bad value quoted in the message


class InvalidId(FlowschedError):
    """A DAG, task or run id breaks the id rule; the message names it and the rule."""


def id_problem(kind: str, value: object) -> str | None:
    """Why ``value`` is not a valid ``kind`` ('dag_id', 'task_id', 'run_id'), or None."""
    rule = f"use {_ALLOWED[kind]}, at most {ID_MAX_LENGTH} characters"
    if not isinstance(value, str):
        return f"invalid {kind} {value!r}: must be a string ({rule})"
    shown = repr(value if len(value) <= _SHOWN else value[:_SHOWN] + "…")
    if len(value) > ID_MAX_LENGTH:
        return f"invalid {kind} {shown}: {len(value)} characters is too long ({rule})"
    if not _PATTERNS[kind].fullmatch(value):
        bad = sorted({c for c in value if not _PATTERNS[kind].fullmatch(c)})
        which = f"has {', '.join(repr(c) for c in bad)}" if bad else "is empty"
        return f"invalid {kind} {shown}: it {which} ({rule})"
    return None


def validate_id(kind: str, value: object, error: type[Exception] = InvalidId) -> str:
    """Return ``value`` if it is a valid ``kind``, else raise ``error`` saying why."""
    problem = id_problem(kind, value)
    if problem is not None:
        raise error(problem)
    assert isinstance(value, str)
    return value


def validate_run_id(run_id: object) -> str:
    """The run id rule, for every place a run is created (trigger, backfill, API, UI)."""
    return validate_id("run_id", run_id)
