"""PythonVirtualenvOperator and ExternalPythonOperator: a callable run in another interpreter.

As in Airflow, the callable's source (not the object) is written to a script and
run by the other interpreter, so it must import what it needs inside its body.
Its arguments go in and its result comes back as JSON files (flowsched passes
JSON, never pickles). Virtualenvs are built once per set of requirements (a hash
of requirements, Python version, system_site_packages, pip options) under
``[core] venv_cache_path`` and reused, built under a lock so concurrent tries
on one worker never build the same one twice.
"""

from __future__ import annotations

import ast
import contextlib
import fcntl
import hashlib
import inspect
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

from flowsched.exceptions import DagDefinitionError, FlowschedError
from flowsched.operators.python import PythonOperator
from flowsched.xcom_arg import resolve_xcom_args

log = logging.getLogger("flowsched.task")

# Marks a finished venv: a folder without it (a build that died) is rebuilt.
COMPLETE_MARKER = "install_complete_marker.json"

RUNNER = """
import json, sys

{source}

with open(sys.argv[1], encoding="utf-8") as stream:
    payload = json.load(stream)
result = {name}(*payload["args"], **payload["kwargs"])
try:
    encoded = json.dumps(result)
except (TypeError, ValueError) as exc:
    raise SystemExit(f"the callable's return value is not JSON-serializable: {{exc}}")
with open(sys.argv[2], "w", encoding="utf-8") as stream:
    stream.write(encoded)
"""


class ExternalPythonFailed(FlowschedError):
    """The callable failed in the other interpreter, or the interpreter could not be set up."""


def callable_source(func: Callable[..., Any]) -> tuple[str, str]:
    """(source without decorators, function name) of a plain ``def`` function."""
    try:
        source = textwrap.dedent(inspect.getsource(func))
    except (OSError, TypeError) as exc:
        raise DagDefinitionError(f"cannot read the source of {func!r}: {exc}") from None
    tree = ast.parse(source)
    functions = [node for node in tree.body if isinstance(node, ast.FunctionDef)]
    if len(functions) != 1 or func.__name__ == "<lambda>":
        raise DagDefinitionError(
            f"{func!r}: the callable must be a plain `def` function (not a lambda or method)"
        )
    functions[0].decorator_list = []
    return ast.unparse(functions[0]), functions[0].name


class _OtherInterpreterOperator(PythonOperator):
    """Runs ``python_callable`` with ``self._python()``, arguments and result as JSON."""

    def __init__(self, task_id: str, python_callable: Callable[..., Any], **kwargs: Any) -> None:
        super().__init__(task_id, python_callable=python_callable, **kwargs)
        # Checked when the DAG file is parsed, so a bad callable is an import error.
        self.source, self.function_name = callable_source(python_callable)
        self._process: subprocess.Popen[bytes] | None = None

    def _python(self) -> str:
        raise NotImplementedError

    def execute(self, context: dict[str, Any]) -> Any:
        args = resolve_xcom_args(self.op_args, context)
        kwargs = resolve_xcom_args(self.op_kwargs, context)
        try:
            payload = json.dumps({"args": list(args), "kwargs": dict(kwargs)})
        except (TypeError, ValueError) as exc:
            raise ExternalPythonFailed(
                f"task '{self.task_id}': op_args/op_kwargs must be JSON-serializable: {exc}"
            ) from None
        python = self._python()
        with tempfile.TemporaryDirectory(prefix="flowsched-venv-call-") as scratch:
            folder = Path(scratch)
            (folder / "script.py").write_text(
                RUNNER.format(source=self.source, name=self.function_name), encoding="utf-8"
            )
            (folder / "input.json").write_text(payload, encoding="utf-8")
            code = self._run(
                [python, str(folder / "script.py"), "input.json", "output.json"], folder
            )
            if code != 0:
                raise ExternalPythonFailed(
                    f"task '{self.task_id}': the callable failed in {python} (exit code {code}); "
                    "its traceback is in the log above"
                )
            result = json.loads((folder / "output.json").read_text(encoding="utf-8"))
        if self.show_return_value_in_logs:
            log.info("Done. Returned value was: %s", result)
        return result

    def _run(self, command: list[str], cwd: Path) -> int:
        """Run, copying output to the task log line by line; the exit code."""
        self._process = subprocess.Popen(
            command,
            cwd=cwd,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        assert self._process.stdout is not None
        for raw in self._process.stdout:
            sys.stdout.write(raw.decode("utf-8", errors="replace"))
            sys.stdout.flush()
        code = self._process.wait()
        self._process = None
        return code

    def on_kill(self) -> None:
        process = self._process
        if process is not None and process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)


class ExternalPythonOperator(_OtherInterpreterOperator):
    """The callable runs with an existing interpreter, ``python`` (a path), as in Airflow."""

    template_fields = (*PythonOperator.template_fields, "python")

    def __init__(
        self, task_id: str, python: str, python_callable: Callable[..., Any], **kwargs: Any
    ) -> None:
        if not isinstance(python, str) or not python:
            raise DagDefinitionError(f"task '{task_id}': python must be an interpreter's path")
        super().__init__(task_id, python_callable=python_callable, **kwargs)
        self.python = python

    def _python(self) -> str:
        if not os.access(self.python, os.X_OK):
            raise ExternalPythonFailed(
                f"task '{self.task_id}': python {self.python!r} is not an executable file "
                "on this worker"
            )
        return self.python


class PythonVirtualenvOperator(_OtherInterpreterOperator):
    """The callable runs in a virtualenv with ``requirements`` installed, as in Airflow."""

    template_fields = (*PythonOperator.template_fields, "requirements")

    def __init__(
        self,
        task_id: str,
        python_callable: Callable[..., Any],
        requirements: list[str] | str | None = None,
        python_version: str | None = None,
        system_site_packages: bool = True,
        pip_install_options: list[str] | None = None,
        index_urls: list[str] | str | None = None,
        venv_cache_path: str | os.PathLike[str] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(task_id, python_callable=python_callable, **kwargs)
        if isinstance(requirements, str):
            requirements = [line for line in requirements.splitlines() if line.strip()]
        self.requirements = sorted(requirement.strip() for requirement in requirements or [])
        self.python_version = str(python_version) if python_version else None
        self.system_site_packages = bool(system_site_packages)
        self.pip_install_options = list(pip_install_options or [])
        self.index_urls = [index_urls] if isinstance(index_urls, str) else list(index_urls or [])
        self.venv_cache_path = str(venv_cache_path) if venv_cache_path else None

    def _base_python(self) -> str:
        if self.python_version is None:
            return sys.executable
        found = shutil.which(f"python{self.python_version}")
        if found is None:
            raise ExternalPythonFailed(
                f"task '{self.task_id}': python_version {self.python_version}: no "
                f"'python{self.python_version}' on this worker's PATH"
            )
        return found

    def venv_key(self) -> str:
        """The cache key: what makes two virtualenvs interchangeable."""
        spec = {
            "requirements": self.requirements,
            "python": self.python_version or ".".join(map(str, sys.version_info[:2])),
            "system_site_packages": self.system_site_packages,
            "pip_install_options": self.pip_install_options,
            "index_urls": self.index_urls,
        }
        return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]

    def _python(self) -> str:
        from flowsched.config import get_config

        cache = Path(self.venv_cache_path or get_config().core.venv_cache_path)
        cache.mkdir(parents=True, exist_ok=True)
        venv = cache / f"venv-{self.venv_key()}"
        with open(cache / f"venv-{self.venv_key()}.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # one build per key at a time on this worker
            if not (venv / COMPLETE_MARKER).exists():
                self._build(venv)
            else:
                log.info("Reusing virtualenv %s", venv)
        return str(venv / "bin" / "python")

    def _build(self, venv: Path) -> None:
        log.info("Building virtualenv %s", venv)
        shutil.rmtree(venv, ignore_errors=True)
        command = [self._base_python(), "-m", "venv", "--without-pip"]
        if self.system_site_packages:
            command.append("--system-site-packages")
        self._checked([*command, str(venv)], venv.parent, "creating the virtualenv")
        if self.requirements:
            # This interpreter's pip installs into the venv (pip --python): no pip per venv.
            pip = [sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python")]
            index = [
                arg
                for i, url in enumerate(self.index_urls)
                for arg in ("--index-url" if i == 0 else "--extra-index-url", url)
            ]
            install = [*pip, "install", "--no-input", *index, *self.pip_install_options]
            self._checked([*install, *self.requirements], venv.parent, "installing requirements")
        marker = {"requirements": self.requirements, "key": self.venv_key()}
        (venv / COMPLETE_MARKER).write_text(json.dumps(marker), encoding="utf-8")

    def _checked(self, command: list[str], cwd: Path, what: str) -> None:
        code = self._run(command, cwd)
        if code != 0:
            raise ExternalPythonFailed(
                f"task '{self.task_id}': {what} failed (exit code {code}): {' '.join(command)}"
            )
