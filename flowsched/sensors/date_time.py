"""DateTimeSensor: wait for a moment (Airflow's airflow.sensors.date_time)."""

from __future__ import annotations

import datetime
from typing import Any

from flowsched.exceptions import DagDefinitionError
from flowsched.sensors.base import BaseSensorOperator
from flowsched.timezone import parse_datetime, utcnow


class DateTimeSensor(BaseSensorOperator):
    """Done once now is past ``target_time`` (a datetime, or templated text such as
    ``"{{ data_interval_end.add(hours=1) }}"``; naive means the cluster's zone)."""

    template_fields = ("target_time",)

    def __init__(self, task_id: str, *, target_time: str | datetime.datetime, **kwargs: Any):
        super().__init__(task_id, **kwargs)
        if isinstance(target_time, datetime.datetime):
            self.target_time = target_time.isoformat()
        elif isinstance(target_time, str):
            self.target_time = target_time
        else:
            raise DagDefinitionError(
                f"task '{task_id}': target_time must be a datetime or a string, "
                f"got {type(target_time).__name__}"
            )

    def poke(self, context: dict[str, Any]) -> bool:
        return utcnow().timestamp() > parse_datetime(str(self.target_time)).timestamp()
