"""Executors: how a queued try reaches a process that runs it."""

from __future__ import annotations

from flowsched.config import get_config
from flowsched.executors.base import BaseExecutor


def get_executor(name: str | None = None) -> BaseExecutor:
    name = name or get_config().core.executor
    if name == "local":
        from flowsched.executors.local import LocalExecutor

        return LocalExecutor()
    if name == "celery":
        from flowsched.celery.executor import CeleryExecutor

        return CeleryExecutor()
    raise ValueError(f"unknown executor {name!r}")
