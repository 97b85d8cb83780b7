"""BranchDateTimeOperator: follow one set of tasks inside a time window, another outside it."""

from __future__ import annotations

import datetime
from collections.abc import Iterable
from typing import Any

from flowsched.exceptions import DagDefinitionError
from flowsched.operators.branch import BaseBranchOperator
from flowsched.timezone import utcnow

Target = datetime.datetime | datetime.time | None


def target_times_as_dates(
    base_date: datetime.datetime, lower: Target, upper: Target
) -> tuple[datetime.datetime | None, datetime.datetime | None]:
    """Times of day become datetimes on ``base_date``; an upper before the lower is next day."""

    def on_base(value: Target) -> datetime.datetime | None:
        if isinstance(value, datetime.time):
            return datetime.datetime.combine(base_date.date(), value)
        return value

    if isinstance(lower, datetime.datetime) and isinstance(upper, datetime.datetime):
        return lower, upper
    low, high = on_base(lower), on_base(upper)
    if low is not None and high is not None and high < low:
        high += datetime.timedelta(days=1)
    return low, high


class BranchDateTimeOperator(BaseBranchOperator):
    """As in Airflow: now (or the run's logical date) against ``target_lower``..``target_upper``.

    Naive targets mean wall-clock time in the DAG's zone.
    """

    def __init__(
        self,
        *,
        follow_task_ids_if_true: str | Iterable[str],
        follow_task_ids_if_false: str | Iterable[str],
        target_lower: Target,
        target_upper: Target,
        use_task_logical_date: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if target_lower is None and target_upper is None:
            raise DagDefinitionError(
                f"task '{self.task_id}': both target_upper and target_lower are None; at "
                "least one must be given to compare the current datetime with"
            )
        self.follow_task_ids_if_true = follow_task_ids_if_true
        self.follow_task_ids_if_false = follow_task_ids_if_false
        self.target_lower = target_lower
        self.target_upper = target_upper
        self.use_task_logical_date = use_task_logical_date

    def choose_branch(self, context: dict[str, Any]) -> str | Iterable[str]:
        assert self.dag is not None
        zone = self.dag.timezone
        now = context["logical_date"] if self.use_task_logical_date else utcnow()
        now = now.astimezone(zone)
        naive_now = now.replace(tzinfo=None)
        lower, upper = target_times_as_dates(naive_now, self.target_lower, self.target_upper)

        def aware(value: datetime.datetime | None) -> datetime.datetime | None:
            if value is None or value.tzinfo is not None:
                return value
            return value.replace(tzinfo=zone)

        lower, upper = aware(lower), aware(upper)
        if upper is not None and upper < now:
            return self.follow_task_ids_if_false
        if lower is not None and lower > now:
            return self.follow_task_ids_if_false
        return self.follow_task_ids_if_true
