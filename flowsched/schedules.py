"""When a DAG runs: cron strings, presets, fixed intervals, or only on demand.

A schedule cuts time into data intervals. The run for ``[start, end)`` gets
``logical_date = start`` and is created once ``end`` has passed, as in Airflow.
Cron expressions are evaluated in the DAG's time zone, so ``0 8 * * *`` means
08:00 on the cluster's clock, not in UTC.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta, tzinfo
from typing import Any

from croniter import croniter

from flowsched.exceptions import DagDefinitionError

PRESETS = {
    "@hourly": "0 * * * *",
    "@daily": "0 0 * * *",
    "@weekly": "0 0 * * 0",
    "@monthly": "0 0 1 * *",
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
}


@dataclass(frozen=True)
class Interval:
    start: datetime
    end: datetime


class Schedule:
    """Base: ``next_interval`` answers which interval should run after ``last``."""

    kind = "none"

    def next_interval(
        self,
        last: Interval | None,
        start_date: datetime,
        end_date: datetime | None,
        catchup: bool,
        now: datetime,
    ) -> Interval | None:
        return None

    def intervals_between(self, start: datetime, end: datetime) -> list[Interval]:
        """Every interval whose start lies in ``[start, end]`` (for backfill)."""
        return []

    def to_dict(self) -> dict[str, Any] | None:
        return None

    def describe(self) -> str:
        return "None"


class CronSchedule(Schedule):
    kind = "cron"

    def __init__(self, expression: str, zone: tzinfo) -> None:
        self.source = expression
        self.expression = PRESETS.get(expression, expression)
        self.zone = zone
        if not croniter.is_valid(self.expression):
            raise DagDefinitionError(f"invalid cron expression {expression!r}")

    def _next(self, after: datetime, inclusive: bool = False) -> datetime:
        local = after.astimezone(self.zone)
        if inclusive:
            local = local - timedelta(microseconds=1)
        return croniter(self.expression, local).get_next(datetime)

    def _prev(self, before: datetime) -> datetime:
        return croniter(self.expression, before.astimezone(self.zone)).get_prev(datetime)

    def next_interval(self, last, start_date, end_date, catchup, now):
        start = last.end if last is not None else self._next(start_date, inclusive=True)
        if not catchup:
            # Skip to the latest complete interval, never before `start`.
            latest_end = self._prev(now + timedelta(microseconds=1))
            latest_start = self._prev(latest_end)
            if latest_start > start:
                start = latest_start
        if end_date is not None and start > end_date:
            return None
        return Interval(start, self._next(start))

    def intervals_between(self, start, end):
        out: list[Interval] = []
        current = self._next(start, inclusive=True)
        while current <= end:
            following = self._next(current)
            out.append(Interval(current, following))
            current = following
        return out

    def to_dict(self):
        return {"type": "cron", "expression": self.source}

    def describe(self) -> str:
        return self.source


class DeltaSchedule(Schedule):
    kind = "delta"

    def __init__(self, delta: timedelta) -> None:
        if delta <= timedelta(0):
            raise DagDefinitionError(f"schedule interval must be positive, got {delta}")
        self.delta = delta

    def next_interval(self, last, start_date, end_date, catchup, now):
        start = last.end if last is not None else start_date
        if not catchup and start + self.delta <= now:
            periods = (now - start) // self.delta
            start = start + (periods - 1) * self.delta
        if end_date is not None and start > end_date:
            return None
        return Interval(start, start + self.delta)

    def intervals_between(self, start, end):
        out = []
        current = start
        while current <= end:
            out.append(Interval(current, current + self.delta))
            current += self.delta
        return out

    def to_dict(self):
        return {"type": "delta", "seconds": self.delta.total_seconds()}

    def describe(self) -> str:
        return str(self.delta)


class OnceSchedule(Schedule):
    kind = "once"

    def next_interval(self, last, start_date, end_date, catchup, now):
        if last is not None:
            return None
        return Interval(start_date, start_date)

    def intervals_between(self, start, end):
        return [Interval(start, start)]

    def to_dict(self):
        return {"type": "once"}

    def describe(self) -> str:
        return "@once"


class DatasetSchedule(Schedule):
    """Runs when every listed dataset has been updated since the last such run.

    Not time-based: the scheduler creates these runs from dataset events
    (:mod:`flowsched.scheduler.dataset_runs`), never from intervals.
    """

    kind = "dataset"

    def __init__(self, uris: list[str]) -> None:
        if not uris:
            raise DagDefinitionError("a dataset schedule needs at least one Dataset")
        self.uris = sorted(set(uris))

    def to_dict(self):
        return {"type": "dataset", "uris": self.uris}

    def describe(self) -> str:
        return "Dataset"


def make_schedule(value: Any, zone: tzinfo) -> Schedule:
    """Turn what a DAG file passes as ``schedule`` into a Schedule, or raise clearly.

    Anything else is refused, naming its type, rather than stored as "no schedule":
    the scheduler works from the serialized form and never runs DAG code, so a
    timetable object (or a Schedule subclass) it cannot serialize would silently
    make the DAG manual-only.
    """
    if value is None:
        return Schedule()
    if type(value) in BUILT_IN_SCHEDULES:
        return value
    if isinstance(value, timedelta):
        return DeltaSchedule(value)
    if isinstance(value, str):
        if value == "@once":
            return OnceSchedule()
        if value.startswith("@") and value not in PRESETS:
            raise DagDefinitionError(
                f"unknown schedule preset {value!r} (known: @once, {', '.join(PRESETS)})"
            )
        return CronSchedule(value, zone)
    if isinstance(value, list | tuple | set):
        return _collection_schedule(value)
    raise DagDefinitionError(
        f"schedule of type {_type_name(value)} is not supported: use a cron string, a preset "
        f"(@once, {', '.join(PRESETS)}), a timedelta, a list of Datasets or None (custom "
        "timetables are not supported: the scheduler never runs DAG code)"
    )


def _collection_schedule(value: list[Any] | tuple[Any, ...] | set[Any]) -> Schedule:
    """A list as ``schedule``: as in Airflow, the datasets that trigger the DAG."""
    from flowsched.datasets import Dataset

    others = [item for item in value if not isinstance(item, Dataset)]
    if others or not value:
        got = f"got {others[0]!r}" if others else "got none"
        raise DagDefinitionError(
            f"schedule of type {_type_name(value)} is not supported: a list schedule must "
            f"hold only Datasets, {got}"
        )
    return DatasetSchedule([item.uri for item in value])


def _type_name(value: Any) -> str:
    """The type's name, and the value itself when it is a plain one (42, a list)."""
    name = type(value).__qualname__
    if isinstance(value, int | float | list | tuple | set | dict | bytes):
        return f"{name} ({value!r:.80})"
    return name


# Exactly these (not subclasses: a subclass's own rules would not survive serialization).
BUILT_IN_SCHEDULES = (Schedule, CronSchedule, DeltaSchedule, OnceSchedule)


def schedule_from_dict(data: dict[str, Any] | None, zone: tzinfo) -> Schedule:
    if data is None:
        return Schedule()
    kind = data["type"]
    if kind == "cron":
        return CronSchedule(data["expression"], zone)
    if kind == "delta":
        return DeltaSchedule(timedelta(seconds=data["seconds"]))
    if kind == "once":
        return OnceSchedule()
    if kind == "dataset":
        return DatasetSchedule(data["uris"])
    raise ValueError(f"unknown schedule type {kind!r}")
