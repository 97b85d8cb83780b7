"""BashSensor: poke by running a shell command (Airflow's airflow.sensors.bash)."""

from __future__ import annotations

import os
import subprocess
from typing import Any

from flowsched.exceptions import FlowschedError
from flowsched.sensors.base import BaseSensorOperator


class BashSensorFailed(FlowschedError):
    """The command exited with a code that means an error, not "not yet"."""


class BashSensor(BaseSensorOperator):
    """Done when ``bash_command`` exits 0. Any other code means "not yet", unless
    ``retry_exit_code`` is set: then only that code means "not yet" and others fail."""

    template_fields = ("bash_command", "env")

    def __init__(
        self,
        task_id: str,
        *,
        bash_command: str,
        env: dict[str, str] | None = None,
        output_encoding: str = "utf-8",
        retry_exit_code: int | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(task_id, **kwargs)
        self.bash_command = bash_command
        self.env = env
        self.output_encoding = output_encoding
        self.retry_exit_code = retry_exit_code

    def poke(self, context: dict[str, Any]) -> bool:
        completed = subprocess.run(
            ["bash", "-c", self.bash_command],
            env=self.env if self.env is not None else dict(os.environ),
            stdin=subprocess.DEVNULL,
            check=False,
        )
        code = completed.returncode
        if code == 0:
            return True
        if self.retry_exit_code is None or code == self.retry_exit_code:
            return False
        raise BashSensorFailed(
            f"task '{self.task_id}': command exited with {code} "
            f"(only {self.retry_exit_code} means not yet)"
        )
