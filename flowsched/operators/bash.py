"""BashOperator: a shell command whose exit code decides the task's state."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from typing import Any

from flowsched.exceptions import FlowschedError
from flowsched.operators.base import BaseOperator


class BashCommandFailed(FlowschedError):
    pass


class BashOperator(BaseOperator):
    """Runs ``bash -c`` in its own process group so a kill reaches every child.

    Output goes to the task log line by line; the last line is the XCom value.
    """

    template_fields = ("bash_command", "env", "cwd")

    def __init__(
        self,
        task_id: str,
        bash_command: str,
        env: dict[str, str] | None = None,
        append_env: bool = True,
        cwd: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(task_id, **kwargs)
        self.bash_command = bash_command
        self.env = env
        self.append_env = append_env
        self.cwd = cwd
        self._process: subprocess.Popen[bytes] | None = None

    def execute(self, context: dict[str, Any]) -> str | None:
        env = dict(os.environ) if (self.append_env or self.env is None) else {}
        env.update(self.env or {})
        env.update(
            FLOWSCHED_DAG_ID=context["dag_id"],
            FLOWSCHED_TASK_ID=self.task_id,
            FLOWSCHED_RUN_ID=context["run_id"],
            FLOWSCHED_TRY_NUMBER=str(context["try_number"]),
            FLOWSCHED_LOGICAL_DATE=context["logical_date"].isoformat(),
        )
        self._process = subprocess.Popen(
            ["bash", "-c", self.bash_command],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=self.cwd,
            start_new_session=True,
        )
        last_line: str | None = None
        assert self._process.stdout is not None
        for raw in self._process.stdout:
            line = raw.decode("utf-8", errors="replace").rstrip("\n")
            sys.stdout.write(line + "\n")
            sys.stdout.flush()
            last_line = line
        code = self._process.wait()
        self._process = None
        if code != 0:
            raise BashCommandFailed(f"bash command exited with code {code}")
        return last_line

    def on_kill(self) -> None:
        process = self._process
        if process is not None and process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
