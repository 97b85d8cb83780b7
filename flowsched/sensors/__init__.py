"""Built-in sensors: tasks that wait for a condition (Airflow's airflow.sensors.*)."""

from flowsched.sensors.base import BaseSensorOperator, PokeReturnValue
from flowsched.sensors.bash import BashSensor
from flowsched.sensors.date_time import DateTimeSensor
from flowsched.sensors.external_task import ExternalTaskSensor
from flowsched.sensors.filesystem import FileSensor
from flowsched.sensors.python import PythonSensor
from flowsched.sensors.time_delta import TimeDeltaSensor

__all__ = [
    "BaseSensorOperator",
    "BashSensor",
    "DateTimeSensor",
    "ExternalTaskSensor",
    "FileSensor",
    "PokeReturnValue",
    "PythonSensor",
    "TimeDeltaSensor",
]
