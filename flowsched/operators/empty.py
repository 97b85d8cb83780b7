"""EmptyOperator: a placeholder node; the scheduler marks it successful itself.

It is never sent to a worker (as in Airflow): it costs no slot, no process and no
DAG file import, which makes it cheap to use as a join or a start marker.
"""

from __future__ import annotations

from typing import Any

from flowsched.operators.base import BaseOperator


class EmptyOperator(BaseOperator):
    ui_color = "#e8f7e4"

    def execute(self, context: dict[str, Any]) -> None:
        """Runs only under ``flowsched tasks run`` (debugging); does nothing."""


# Airflow 1.x/2.x name, still found in many DAG files.
DummyOperator = EmptyOperator
