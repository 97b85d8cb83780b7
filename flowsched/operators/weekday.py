"""BranchDayOfWeekOperator: follow one set of tasks on given week days, another on the rest."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from flowsched.operators.branch import BaseBranchOperator
from flowsched.timezone import utcnow
from flowsched.weekday import WeekDay


class BranchDayOfWeekOperator(BaseBranchOperator):
    """As in Airflow: today in the DAG's zone, or the run's logical date if asked."""

    def __init__(
        self,
        *,
        follow_task_ids_if_true: str | Iterable[str],
        follow_task_ids_if_false: str | Iterable[str],
        week_day: str | WeekDay | Iterable[str | WeekDay],
        use_task_logical_date: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.follow_task_ids_if_true = follow_task_ids_if_true
        self.follow_task_ids_if_false = follow_task_ids_if_false
        self.week_day = week_day
        self.use_task_logical_date = use_task_logical_date
        self._week_day_num = WeekDay.validate_week_day(week_day)

    def choose_branch(self, context: dict[str, Any]) -> str | Iterable[str]:
        if self.use_task_logical_date:
            now = context["logical_date"]
        else:
            assert self.dag is not None
            now = utcnow().astimezone(self.dag.timezone)
        if now.isoweekday() in self._week_day_num:
            return self.follow_task_ids_if_true
        return self.follow_task_ids_if_false
