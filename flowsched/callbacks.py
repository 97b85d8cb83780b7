"""Airflow's ``on_*_callback``s: checked when the DAG file is read, called with a deadline.

A callback is a callable taking the context dict (a notifier instance is one),
or a list of them. Where each one runs (never in the scheduler):

- task callbacks, on the worker, in the try's own process, after the try's
  state is recorded (``on_execute_callback`` just before ``execute``);
- a DAG's run callbacks, and a task's failure or retry callback when its try
  failed where the worker could not tell (a zombie, a killed process): in the
  callback runner (:mod:`flowsched.callback_runner`), from callback requests.

A callback that raises or outlives ``[alerts] callback_timeout`` is logged and
abandoned; it never changes the state of the task or the run.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
import traceback
from collections.abc import Callable, Iterator
from typing import Any

from flowsched.exceptions import DagDefinitionError

Callback = Callable[[dict[str, Any]], Any]

TASK_CALLBACKS = (
    "on_execute_callback",
    "on_failure_callback",
    "on_success_callback",
    "on_retry_callback",
    "on_skipped_callback",
)
DAG_CALLBACKS = ("on_success_callback", "on_failure_callback")

# What a callback request asks for: (owner, callback attribute).
REQUEST_TYPES = {
    "dag_failure": ("dag", "on_failure_callback"),
    "dag_success": ("dag", "on_success_callback"),
    "task_failure": ("task", "on_failure_callback"),
    "task_retry": ("task", "on_retry_callback"),
}


def as_callbacks(value: Any, where: str, name: str) -> list[Callback]:
    """``value`` (None, a callable, or a list of callables) as a list; a clear error if not."""
    if value is None:
        return []
    items = list(value) if isinstance(value, list | tuple) else [value]
    for item in items:
        if not callable(item):
            raise DagDefinitionError(
                f"{where}: {name} must be a callable or a list of callables, got {item!r}"
            )
    return items


def wants_run_callback(dag: Any, state: Any) -> bool:
    """Whether a run of the serialized ``dag`` ending in ``state`` needs the callback runner:
    the DAG has a callback for it, or (failures) the cluster has ``[alerts] on_failure``."""
    from flowsched.config import get_config

    if str(state) == "failed":
        return bool(dag.data.get("has_on_failure_callback")) or bool(get_config().alerts.on_failure)
    return bool(dag.data.get("has_on_success_callback"))


class CallbackTimeout(Exception):
    """A callback outlived ``[alerts] callback_timeout``."""


@contextlib.contextmanager
def _deadline(seconds: float) -> Iterator[None]:
    """Interrupt the callback after ``seconds`` (SIGALRM: main thread only; elsewhere the
    callback runner's per-request process deadline still holds)."""
    if threading.current_thread() is not threading.main_thread() or seconds <= 0:
        yield
        return

    def expire(*_: object) -> None:
        raise CallbackTimeout(f"timed out after {seconds:g} s ([alerts] callback_timeout)")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def call_callbacks(
    callbacks: list[Callback],
    context: dict[str, Any],
    *,
    name: str,
    where: str,
    timeout: float,
    logger: logging.Logger,
) -> int:
    """Call each callback with ``context``; log (never raise) what fails. Returns failures."""
    failures = 0
    for callback in callbacks:
        label = getattr(callback, "__qualname__", None) or type(callback).__name__
        logger.info("%s: calling %s %s", where, name, label)
        try:
            with _deadline(timeout):
                callback(context)
        except BaseException as exc:  # a callback must never decide a state, nor kill us
            failures += 1
            if isinstance(exc, CallbackTimeout):
                logger.error("%s: %s %s %s", where, name, label, exc)
            else:
                logger.error(
                    "%s: %s %s failed:\n%s",
                    where,
                    name,
                    label,
                    "".join(traceback.format_exception(exc)).rstrip(),
                )
    return failures
