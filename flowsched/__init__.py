"""flowsched: a distributed workflow scheduler.

The public authoring API lives here::

    from flowsched import DAG, BashOperator, PythonOperator, task
"""

__version__ = "0.1.0"

from flowsched.dag import DAG
from flowsched.decorators import task
from flowsched.operators import BaseOperator, BashOperator, PythonOperator
from flowsched.plugins import FlowschedPlugin
from flowsched.providers.docker import DockerOperator
from flowsched.state import RunState, TaskState, TriggerRule
from flowsched.xcom_arg import XComArg

__all__ = [
    "DAG",
    "BaseOperator",
    "BashOperator",
    "DockerOperator",
    "FlowschedPlugin",
    "PythonOperator",
    "RunState",
    "TaskState",
    "TriggerRule",
    "XComArg",
    "__version__",
    "task",
]
