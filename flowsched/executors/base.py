"""The executor interface the scheduler drives.

An executor only transports work: the try's state lives in the database and
is written by the runner itself. Executors report just one thing back, a
process that ended, so the scheduler can fail a try whose process died before
it could record a result.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

from flowsched.workloads import Workload


@dataclass(frozen=True)
class ExecutorEvent:
    ti_id: int
    try_number: int
    exit_code: int


class BaseExecutor:
    name = "base"
    # True when queued work is lost if the scheduler process dies (local).
    tasks_die_with_scheduler = False

    def __init__(self) -> None:
        # Set whenever a try finishes, to wake the scheduler loop early.
        self.wakeup = threading.Event()

    def start(self) -> None:
        """Start workers or connections; called once by the scheduler."""

    def queue(self, workload: Workload) -> None:
        raise NotImplementedError

    def slots_available(self) -> int:
        raise NotImplementedError

    def not_yet_late(self, timeout: float) -> set[tuple[int, int]]:
        """(ti id, try number) of tries queued here that cannot be late yet: not handed
        on (the broker is down), or handed on less than ``timeout`` seconds ago."""
        return set()

    def sync(self) -> list[ExecutorEvent]:
        """Events since the last call."""
        return []

    def end(self, grace: float) -> None:
        """Stop: let running tries finish for up to ``grace`` seconds, then interrupt them."""
