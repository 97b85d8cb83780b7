"""flowsched: a distributed workflow scheduler.

The public authoring API lives here::

    from flowsched import DAG, BashOperator, PythonOperator, dag, task
"""

__version__ = "0.1.0"

from flowsched.chain import chain, chain_linear, cross_downstream
from flowsched.context import get_current_context
from flowsched.dag import DAG

# Imported last on purpose: `from flowsched import dag` must give the @dag decorator,
# as `from airflow.decorators import dag` does, not the flowsched.dag module that the
# import of DAG above bound to this name. `from flowsched.dag import DAG` still works
# (it reads sys.modules, not this attribute).
from flowsched.decorators import dag, task
from flowsched.edgemodifier import Label
from flowsched.exceptions import AirflowSkipException, SkipTask
from flowsched.operators import (
    BaseBranchOperator,
    BaseOperator,
    BashOperator,
    BranchPythonOperator,
    EmptyOperator,
    LatestOnlyOperator,
    PythonOperator,
    ShortCircuitOperator,
)
from flowsched.plugins import FlowschedPlugin
from flowsched.providers.docker import DockerOperator
from flowsched.state import RunState, TaskState, TriggerRule
from flowsched.xcom_arg import XComArg

__all__ = [
    "DAG",
    "AirflowSkipException",
    "BaseBranchOperator",
    "BaseOperator",
    "BashOperator",
    "BranchPythonOperator",
    "DockerOperator",
    "EmptyOperator",
    "FlowschedPlugin",
    "Label",
    "LatestOnlyOperator",
    "PythonOperator",
    "RunState",
    "ShortCircuitOperator",
    "SkipTask",
    "TaskState",
    "TriggerRule",
    "XComArg",
    "__version__",
    "chain",
    "chain_linear",
    "cross_downstream",
    "dag",
    "get_current_context",
    "task",
]
