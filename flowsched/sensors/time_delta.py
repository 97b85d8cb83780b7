"""TimeDeltaSensor: wait until a delay after the run's data interval (Airflow's
airflow.sensors.time_delta)."""

from __future__ import annotations

import datetime
from typing import Any

from flowsched.exceptions import DagDefinitionError
from flowsched.sensors.base import BaseSensorOperator
from flowsched.timezone import utcnow


class TimeDeltaSensor(BaseSensorOperator):
    """Done once now is past the run's data interval end plus ``delta``."""

    def __init__(self, task_id: str, *, delta: datetime.timedelta, **kwargs: Any) -> None:
        super().__init__(task_id, **kwargs)
        if not isinstance(delta, datetime.timedelta):
            raise DagDefinitionError(f"task '{task_id}': delta must be a timedelta, got {delta!r}")
        self.delta = delta

    def poke(self, context: dict[str, Any]) -> bool:
        end = context.get("data_interval_end") or context["logical_date"]
        # Compared as instants: the context's dates are pendulum objects.
        return utcnow().timestamp() > end.timestamp() + self.delta.total_seconds()
