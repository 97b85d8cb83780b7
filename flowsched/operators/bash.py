"""BashOperator: a shell command whose exit code decides the task's state."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Container
from typing import Any

from flowsched.exceptions import FlowschedError, SkipTask
from flowsched.operators.base import BaseOperator


class BashCommandFailed(FlowschedError):
    pass


class BashOperator(BaseOperator):
    """Runs ``bash -c`` in its own process group so a kill reaches every child.

    Output goes to the task log line by line; the last line is the XCom value.
    """

    template_fields = ("bash_command", "env", "cwd")
    template_ext = (".sh", ".bash")

    def __init__(
        self,
        task_id: str,
        bash_command: str,
        env: dict[str, str] | None = None,
        append_env: bool = False,
        cwd: str | None = None,
        skip_on_exit_code: int | Container[int] | None = 99,
        output_encoding: str = "utf-8",
        **kwargs: Any,
    ) -> None:
        super().__init__(task_id, **kwargs)
        self.bash_command = bash_command
        # As in Airflow: env=None inherits the worker's environment; a given env
        # replaces it, unless append_env=True adds it to the inherited one.
        self.env = env
        self.append_env = append_env
        self.cwd = cwd
        if isinstance(skip_on_exit_code, int):
            skip_on_exit_code = [skip_on_exit_code]
        self.skip_on_exit_code: Container[int] = skip_on_exit_code or []
        self.output_encoding = output_encoding
        self._process: subprocess.Popen[bytes] | None = None

    def _check_cwd(self) -> None:
        if self.cwd is None:
            return
        if not os.path.exists(self.cwd):
            raise BashCommandFailed(f"task '{self.task_id}': can not find the cwd: {self.cwd}")
        if not os.path.isdir(self.cwd):
            raise BashCommandFailed(
                f"task '{self.task_id}': the cwd {self.cwd} must be a directory"
            )

    def execute(self, context: dict[str, Any]) -> str | None:
        self._check_cwd()
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
            line = raw.decode(self.output_encoding, errors="replace").rstrip("\n")
            sys.stdout.write(line + "\n")
            sys.stdout.flush()
            last_line = line
        code = self._process.wait()
        self._process = None
        if code in self.skip_on_exit_code:
            raise SkipTask(f"Bash command returned exit code {code}. Skipping.")
        if code != 0:
            raise BashCommandFailed(f"bash command exited with code {code}")
        return last_line

    def on_kill(self) -> None:
        process = self._process
        if process is not None and process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
