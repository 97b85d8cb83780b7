"""The date keys of a task's template context, named and computed as Airflow's.

Datetimes are pendulum DateTimes (templates call ``.add(days=1)``, ``.format()``
on them as in Airflow), shown in the cluster's zone like every time flowsched
shows; ``ds`` and friends are dates in that zone.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import datetime, tzinfo
from typing import Any

import pendulum
from sqlalchemy import select

from flowsched.db.engine import session_scope
from flowsched.db.models import DagRun
from flowsched.schedules import Interval
from flowsched.state import RunState, RunType
from flowsched.timezone import default_timezone


@functools.lru_cache(maxsize=4)
def _pendulum_zone(zone: tzinfo) -> Any:
    """The cluster's zone as pendulum's own: a DateTime in it is made without a lookup."""
    return pendulum.timezone(getattr(zone, "key", None) or str(zone))


def local_zone() -> Any:
    """The cluster's zone (``core.default_timezone``) as a pendulum zone; the process
    that forks tries looks it up once for all of them (``supervisor.preload_imports``)."""
    return _pendulum_zone(default_timezone())


def _local(value: datetime | None) -> pendulum.DateTime | None:
    if value is None:
        return None
    return pendulum.instance(value.astimezone(local_zone()))


def _ds(value: datetime | None) -> str | None:
    return None if value is None else value.strftime("%Y-%m-%d")


def _ds_nodash(value: datetime | None) -> str | None:
    return None if value is None else value.strftime("%Y%m%d")


def _neighbours(dag: Any, run: DagRun) -> tuple[datetime | None, datetime | None]:
    """(previous, next) logical dates by the schedule; a manual run's own date for both."""
    if run.run_type == RunType.MANUAL.value:
        return run.logical_date, run.logical_date
    schedule = dag.schedule
    following = None
    if run.data_interval_start is not None and run.data_interval_end is not None:
        current = Interval(run.data_interval_start, run.data_interval_end)
        interval = schedule.next_interval(current, dag.start_date, None, True, run.logical_date)
        following = interval.start if interval else None
    previous = None
    if schedule.kind == "cron":
        previous = schedule._prev(run.logical_date)
    elif schedule.kind == "delta":
        previous = run.logical_date - schedule.delta
    return previous, following


def _previous_success(run: DagRun) -> DagRun | None:
    with session_scope(read_only=True) as session:
        found = session.scalar(
            select(DagRun)
            .where(
                DagRun.dag_id == run.dag_id,
                DagRun.state == RunState.SUCCESS.value,
                DagRun.logical_date < run.logical_date,
            )
            .order_by(DagRun.logical_date.desc())
            .limit(1)
        )
        if found is not None:
            session.expunge(found)
        return found


class Lazy:
    """A context value read from the database on first use only, as Airflow's context
    gives ``prev_*_success`` (lazy proxies): a try whose task never looks costs no query.

    Stands for its value in templates and code (str, comparisons, arithmetic,
    attributes, ``isinstance``); ``is None`` cannot see through it (as in Airflow).
    """

    __slots__ = ("_compute", "_done", "_value")

    def __init__(self, compute: Callable[[], Any]) -> None:
        self._compute = compute
        self._done = False
        self._value: Any = None

    @property
    def value(self) -> Any:
        if not self._done:
            self._value, self._done = self._compute(), True
        return self._value

    @property  # type: ignore[misc]
    def __class__(self) -> type:
        return type(self.value)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.value, name)

    def __str__(self) -> str:
        return str(self.value)

    def __repr__(self) -> str:
        return repr(self.value)

    def __format__(self, spec: str) -> str:
        return format(self.value, spec)

    def __bool__(self) -> bool:
        return bool(self.value)

    def __hash__(self) -> int:
        return hash(self.value)

    def __eq__(self, other: object) -> bool:
        return bool(self.value == other)

    def __ne__(self, other: object) -> bool:
        return bool(self.value != other)

    def __lt__(self, other: Any) -> bool:
        return bool(self.value < other)

    def __le__(self, other: Any) -> bool:
        return bool(self.value <= other)

    def __gt__(self, other: Any) -> bool:
        return bool(self.value > other)

    def __ge__(self, other: Any) -> bool:
        return bool(self.value >= other)

    def __add__(self, other: Any) -> Any:
        return self.value + other

    def __radd__(self, other: Any) -> Any:
        return other + self.value

    def __sub__(self, other: Any) -> Any:
        return self.value - other

    def __rsub__(self, other: Any) -> Any:
        return other - self.value


def date_context(dag: Any, task: Any, run: DagRun) -> dict[str, Any]:
    """``logical_date``, ``ds``, ``ts_nodash``, ``prev_ds``, ``data_interval_start``..."""
    logical = _local(run.logical_date)
    assert logical is not None
    ts = logical.isoformat()
    previous, following = (_local(value) for value in _neighbours(dag, run))
    found: list[DagRun | None] = []

    def success(field: str) -> Lazy:
        def compute() -> pendulum.DateTime | None:
            if not found:
                found.append(_previous_success(run))  # one query for the four keys
            return _local(getattr(found[0], field)) if found[0] is not None else None

        return Lazy(compute)

    ds_nodash = logical.strftime("%Y%m%d")
    return {
        "logical_date": logical,
        "execution_date": logical,
        "data_interval_start": _local(run.data_interval_start),
        "data_interval_end": _local(run.data_interval_end),
        "ds": logical.strftime("%Y-%m-%d"),
        "ds_nodash": ds_nodash,
        "ts": ts,
        "ts_nodash": logical.strftime("%Y%m%dT%H%M%S"),
        "ts_nodash_with_tz": ts.replace("-", "").replace(":", ""),
        "yesterday_ds": _ds(logical.subtract(days=1)),
        "yesterday_ds_nodash": _ds_nodash(logical.subtract(days=1)),
        "tomorrow_ds": _ds(logical.add(days=1)),
        "tomorrow_ds_nodash": _ds_nodash(logical.add(days=1)),
        "prev_execution_date": previous,
        "prev_ds": _ds(previous),
        "prev_ds_nodash": _ds_nodash(previous),
        "next_execution_date": following,
        "next_ds": _ds(following),
        "next_ds_nodash": _ds_nodash(following),
        "prev_data_interval_start_success": success("data_interval_start"),
        "prev_data_interval_end_success": success("data_interval_end"),
        "prev_start_date_success": success("start_date"),
        "prev_end_date_success": success("end_date"),
        "task_instance_key_str": f"{run.dag_id}__{task.task_id}__{ds_nodash}",
    }


def run_for_templates(run: DagRun) -> DagRun:
    """``dag_run`` as templates see it: ``conf`` is a dict, ``external_trigger`` is set."""
    run.conf = run.conf or {}
    run.external_trigger = run.run_type == RunType.MANUAL.value  # type: ignore[attr-defined]
    return run


# ``from airflow.utils.context import Context`` in type hints: a task's context is a dict.
Context = dict[str, Any]

_current: ContextVar[Context | None] = ContextVar("flowsched_task_context", default=None)


@contextmanager
def current_context(context: Context) -> Iterator[None]:
    """Make ``context`` what :func:`get_current_context` returns while a task executes."""
    token = _current.set(context)
    try:
        yield
    finally:
        _current.reset(token)


def get_current_context() -> Context:
    """The running task's context, from anywhere in its code (Airflow's function)."""
    context = _current.get()
    if context is None:
        raise RuntimeError(
            "get_current_context() was called outside a running task: "
            "it only has a context while a task executes"
        )
    return context
