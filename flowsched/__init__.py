"""flowsched: a distributed workflow scheduler.

The public authoring API lives here::

    from flowsched import DAG, BashOperator, PythonOperator, dag, task
"""

__version__ = "0.1.0"

from flowsched.chain import chain, chain_linear, cross_downstream
from flowsched.connection import Connection
from flowsched.context import get_current_context
from flowsched.dag import DAG
from flowsched.datasets import Dataset
from flowsched.decorators import dag as _dag_decorator
from flowsched.decorators import task
from flowsched.edgemodifier import Label
from flowsched.exceptions import (
    AirflowFailException,
    AirflowRescheduleException,
    AirflowSensorTimeout,
    AirflowSkipException,
    SkipTask,
)
from flowsched.hooks.base import BaseHook
from flowsched.notifications import BaseNotifier, SmtpNotifier, WebhookNotifier
from flowsched.operators import (
    BaseBranchOperator,
    BaseOperator,
    BashOperator,
    BranchDateTimeOperator,
    BranchDayOfWeekOperator,
    BranchPythonOperator,
    EmptyOperator,
    ExternalPythonOperator,
    LatestOnlyOperator,
    PythonOperator,
    PythonVirtualenvOperator,
    ShortCircuitOperator,
    TriggerDagRunOperator,
)
from flowsched.params import Param
from flowsched.plugins import FlowschedPlugin
from flowsched.providers.docker import DockerOperator
from flowsched.sensors import (
    BaseSensorOperator,
    BashSensor,
    DateTimeSensor,
    ExternalTaskSensor,
    FileSensor,
    PokeReturnValue,
    PythonSensor,
    TimeDeltaSensor,
)
from flowsched.state import RunState, TaskState, TriggerRule, WeightRule
from flowsched.task_group import TaskGroup, task_group
from flowsched.variable import Variable
from flowsched.weekday import WeekDay
from flowsched.xcom_arg import XComArg

# `from flowsched import dag` must give the @dag decorator (as `from airflow.decorators
# import dag` does), not the flowsched.dag module that importing DAG bound to this name.
# `from flowsched.dag import DAG` still works: it reads sys.modules, not this attribute.
dag = _dag_decorator

__all__ = [
    "DAG",
    "AirflowFailException",
    "AirflowRescheduleException",
    "AirflowSensorTimeout",
    "AirflowSkipException",
    "BaseBranchOperator",
    "BaseHook",
    "BaseNotifier",
    "BaseOperator",
    "BaseSensorOperator",
    "BashOperator",
    "BashSensor",
    "BranchDateTimeOperator",
    "BranchDayOfWeekOperator",
    "BranchPythonOperator",
    "Connection",
    "Dataset",
    "DateTimeSensor",
    "DockerOperator",
    "EmptyOperator",
    "ExternalPythonOperator",
    "ExternalTaskSensor",
    "FileSensor",
    "FlowschedPlugin",
    "Label",
    "LatestOnlyOperator",
    "Param",
    "PokeReturnValue",
    "PythonOperator",
    "PythonSensor",
    "PythonVirtualenvOperator",
    "RunState",
    "ShortCircuitOperator",
    "SkipTask",
    "SmtpNotifier",
    "TaskGroup",
    "TaskState",
    "TimeDeltaSensor",
    "TriggerDagRunOperator",
    "TriggerRule",
    "Variable",
    "WebhookNotifier",
    "WeekDay",
    "WeightRule",
    "XComArg",
    "__version__",
    "chain",
    "chain_linear",
    "cross_downstream",
    "dag",
    "get_current_context",
    "task",
    "task_group",
]
