"""LatestOnlyOperator: skip what follows unless this is the most recent scheduled run.

As in Airflow: a manually triggered run always proceeds; a scheduled run proceeds
only while "now" lies inside the interval that follows its own, i.e. while it is
the latest run the schedule would create. Catch-up and backfill runs skip.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

from flowsched.operators.branch import BaseBranchOperator
from flowsched.schedules import Interval
from flowsched.state import RunType
from flowsched.timezone import utcnow

log = logging.getLogger("flowsched.task")


class LatestOnlyOperator(BaseBranchOperator):
    ui_color = "#e9ffdb"

    def choose_branch(self, context: dict[str, Any]) -> str | Iterable[str]:
        dag_run = context["dag_run"]
        everything = sorted(self.get_direct_relative_ids(upstream=False))
        if dag_run.run_type == RunType.MANUAL.value:
            log.info("Externally triggered DAG_Run: allowing execution to proceed.")
            return everything
        dag = context["dag"]
        current = Interval(dag_run.data_interval_start, dag_run.data_interval_end)
        following = dag.schedule.next_interval(current, dag.start_date, None, True, utcnow())
        if following is None:
            log.info("Last scheduled execution: allowing execution to proceed.")
            return everything
        now = utcnow()
        log.info(
            "Checking latest only with left_window: %s right_window: %s now: %s",
            following.start,
            following.end,
            now,
        )
        if not following.start < now <= following.end:
            log.info("Not latest execution, skipping downstream.")
            return []
        log.info("Latest, allowing execution to proceed.")
        return everything
