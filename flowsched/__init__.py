"""flowsched: a distributed workflow scheduler.

The public authoring API lives here::

    from flowsched import DAG, BashOperator, PythonOperator, task
"""

__version__ = "0.1.0"

from flowsched.connection import Connection
from flowsched.dag import DAG
from flowsched.decorators import task
from flowsched.hooks.base import BaseHook
from flowsched.operators import BaseOperator, BashOperator, PythonOperator
from flowsched.plugins import FlowschedPlugin
from flowsched.providers.docker import DockerOperator
from flowsched.state import RunState, TaskState, TriggerRule
from flowsched.variable import Variable
from flowsched.xcom_arg import XComArg

__all__ = [
    "DAG",
    "BaseHook",
    "BaseOperator",
    "BashOperator",
    "Connection",
    "DockerOperator",
    "FlowschedPlugin",
    "PythonOperator",
    "RunState",
    "TaskState",
    "TriggerRule",
    "Variable",
    "XComArg",
    "__version__",
    "task",
]
