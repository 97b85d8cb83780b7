"""A task's callbacks, called by the try's own process on the worker.

The runner remembers the task and its context once the DAG file is loaded;
``on_execute_callback`` runs just before ``execute``, and the others once the
try's state is recorded (so a callback that hangs or crashes cannot change it).
Their output and errors go to the try's log. A try that failed before its
task was loaded (DAG file differs, log not writable) has no task here: its
failure callback is requested from the callback runner instead.
"""

from __future__ import annotations

import logging
from typing import Any

from flowsched.callbacks import call_callbacks
from flowsched.config import get_config
from flowsched.state import TaskState

log = logging.getLogger("flowsched.task")

# The task and context of this process's try (one try per process).
_current: dict[str, Any] = {}

BY_STATE = {
    TaskState.SUCCESS: "on_success_callback",
    TaskState.FAILED: "on_failure_callback",
    TaskState.UP_FOR_RETRY: "on_retry_callback",
    TaskState.SKIPPED: "on_skipped_callback",
}


def remember(task: Any, context: dict[str, Any]) -> None:
    _current.clear()
    _current.update(task=task, context=context)


def loaded() -> bool:
    """Whether this process has the try's task (so it runs its callbacks itself)."""
    return bool(_current)


def _call(name: str, context: dict[str, Any]) -> None:
    task = _current["task"]
    call_callbacks(
        getattr(task, name, []),
        context,
        name=name,
        where=f"{task.dag.dag_id if task.dag else ''}.{task.task_id}",
        timeout=get_config().alerts.callback_timeout,
        logger=log,
    )


def on_execute() -> None:
    if _current:
        _call("on_execute_callback", _current["context"])


def after_result(
    state: TaskState | None,
    exception: BaseException | None,
    error: str | None,
    interrupted: bool,
) -> None:
    """The callback for the recorded ``state``; none if nothing was recorded by this try
    (it moved on elsewhere) or it was interrupted by a shutdown (not the task's doing)."""
    name = BY_STATE.get(state) if state is not None else None
    if not _current or name is None or interrupted:
        return
    context = dict(_current["context"])
    context["exception"] = exception if exception is not None else error
    context["reason"] = error.splitlines()[-1] if error else None
    context["ti"].state = str(state)
    _call(name, context)
