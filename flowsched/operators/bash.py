"""BashOperator: a shell command whose exit code decides the task's state."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import tempfile
from collections.abc import Callable, Container
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
        with tempfile.TemporaryDirectory(prefix="flowschedtmp") as scratch:
            # As in Airflow: without a cwd the command runs in a fresh temporary folder.
            code, last_line = self._run(env, self.cwd or scratch)
        if code in self.skip_on_exit_code:
            raise SkipTask(f"Bash command returned exit code {code}. Skipping.")
        if code != 0:
            raise BashCommandFailed(f"bash command exited with code {code}")
        return last_line

    def _run(self, env: dict[str, str], cwd: str) -> tuple[int, str | None]:
        """Run the command, copying its output to the log; (exit code, last line)."""
        self._process = subprocess.Popen(
            ["bash", "-c", self.bash_command],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=cwd,
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
        return code, last_line

    def on_kill(self) -> None:
        process = self._process
        if process is not None and process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)


class BashDecoratedOperator(BashOperator):
    """``@task.bash``: the function returns the command, which is then rendered and run.

    As in Airflow the function is called when the task runs (with the context keys it
    names), and what it returns must be a non-empty string.
    """

    template_fields = ("bash_command", "env", "cwd", "op_args", "op_kwargs")

    def __init__(
        self,
        task_id: str,
        python_callable: Callable[..., Any],
        op_args: list[Any] | tuple[Any, ...] | None = None,
        op_kwargs: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(task_id, bash_command="", **kwargs)
        self.python_callable = python_callable
        self.op_args = list(op_args or [])
        self.op_kwargs = dict(op_kwargs or {})

    def execute(self, context: dict[str, Any]) -> str | None:
        from flowsched.operators.python import run_callable

        command = run_callable(self.python_callable, self.op_args, self.op_kwargs, context)
        if not isinstance(command, str) or not command.strip():
            raise BashCommandFailed(
                f"task '{self.task_id}': the @task.bash function must return a non-empty "
                f"string (the command), got {command!r}"
            )
        self.bash_command = self.render_template(command, context)
        return super().execute(context)
