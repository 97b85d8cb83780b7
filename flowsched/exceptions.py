"""Errors that name what is wrong and where: every one is meant to be read by a user."""


class FlowschedError(Exception):
    """Base of flowsched's own errors."""


class ConfigError(FlowschedError):
    """A config file or environment value is unknown or malformed."""


class DagDefinitionError(FlowschedError):
    """A DAG file defines something invalid (cycle, duplicate task id, bad schedule...)."""


class CycleError(DagDefinitionError):
    """The task graph of a DAG has a cycle."""


class DuplicateTaskIdError(DagDefinitionError):
    """Two tasks of one DAG share an id."""


class DatabaseUnavailable(FlowschedError):
    """The metadata database cannot be reached."""


class DagNotFound(FlowschedError):
    """No DAG with that id is known."""


class DagRunNotFound(FlowschedError):
    """No run with that id exists for the DAG."""


class TaskNotFound(FlowschedError):
    """No task with that id exists in the DAG."""


class DagFileMismatch(FlowschedError):
    """The DAG file on this worker differs from the one the scheduler queued."""


class TaskTimeout(FlowschedError):
    """A task ran longer than its execution_timeout."""


class TaskTerminated(FlowschedError):
    """A task was stopped from outside (shutdown, clear, mark)."""


class SchedulerNotAllowed(FlowschedError):
    """A second scheduler cannot run safely on this database."""


class SkipTask(FlowschedError):
    """Raised by a task to end its try as ``skipped`` (Airflow's AirflowSkipException)."""


class AirflowRescheduleException(FlowschedError):
    """Raised by a sensor in mode="reschedule": end this process, poke again at
    ``reschedule_date`` in the same try (Airflow's name and meaning)."""

    def __init__(self, reschedule_date: object) -> None:
        super().__init__(f"rescheduled to {reschedule_date}")
        self.reschedule_date = reschedule_date


class AirflowFailException(FlowschedError):
    """Raised by a task to fail at once, without spending its remaining retries."""


class AirflowSensorTimeout(AirflowFailException):
    """A sensor waited past its ``timeout``: it fails without retrying (as in Airflow)."""


# The name Airflow DAG files import, so ``from airflow.exceptions import ...`` ports as is.
AirflowSkipException = SkipTask
