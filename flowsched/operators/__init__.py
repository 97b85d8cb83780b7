"""Built-in operators."""

from flowsched.operators.base import BaseOperator
from flowsched.operators.bash import BashOperator
from flowsched.operators.branch import BaseBranchOperator
from flowsched.operators.datetime import BranchDateTimeOperator
from flowsched.operators.empty import EmptyOperator
from flowsched.operators.latest_only import LatestOnlyOperator
from flowsched.operators.python import BranchPythonOperator, PythonOperator, ShortCircuitOperator
from flowsched.operators.trigger_dagrun import TriggerDagRunOperator
from flowsched.operators.virtualenv import ExternalPythonOperator, PythonVirtualenvOperator
from flowsched.operators.weekday import BranchDayOfWeekOperator

__all__ = [
    "BaseBranchOperator",
    "BaseOperator",
    "BashOperator",
    "BranchDateTimeOperator",
    "BranchDayOfWeekOperator",
    "BranchPythonOperator",
    "EmptyOperator",
    "ExternalPythonOperator",
    "LatestOnlyOperator",
    "PythonOperator",
    "PythonVirtualenvOperator",
    "ShortCircuitOperator",
    "TriggerDagRunOperator",
]
