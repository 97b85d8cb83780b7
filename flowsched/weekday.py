"""WeekDay: days of the week as ISO numbers (Monday is 1), as in ``airflow.utils.weekday``."""

from __future__ import annotations

from collections.abc import Iterable
from enum import IntEnum

from flowsched.exceptions import DagDefinitionError


class WeekDay(IntEnum):
    MONDAY = 1
    TUESDAY = 2
    WEDNESDAY = 3
    THURSDAY = 4
    FRIDAY = 5
    SATURDAY = 6
    SUNDAY = 7

    @classmethod
    def get_weekday_number(cls, week_day_str: str) -> int:
        """``"Monday"`` (any case) -> 1; an unknown name is an error that lists the known ones."""
        try:
            return cls[week_day_str.upper()]
        except KeyError:
            known = ", ".join(day.name.capitalize() for day in cls)
            raise DagDefinitionError(
                f"invalid week day {week_day_str!r} (known: {known})"
            ) from None

    @classmethod
    def convert(cls, day: str | WeekDay) -> int:
        return cls.get_weekday_number(day) if isinstance(day, str) else cls(day)

    @classmethod
    def validate_week_day(cls, week_day: str | WeekDay | Iterable[str | WeekDay]) -> set[int]:
        """One day or several, by name or WeekDay, as a set of ISO day numbers."""
        if isinstance(week_day, str | WeekDay):
            return {cls.convert(week_day)}
        if isinstance(week_day, Iterable):
            return {cls.convert(day) for day in week_day}
        raise DagDefinitionError(
            f"week_day must be a day name, a WeekDay or a set of them, got {week_day!r}"
        )
