"""BaseSensorOperator: a task that waits for something by poking until it holds.

As Airflow's: ``poke(context)`` returns a bool or a :class:`PokeReturnValue`;
``mode="poke"`` keeps the try's process (and its worker and pool slot) between
pokes, ``mode="reschedule"`` ends the process after each unsuccessful poke and
the scheduler queues the same try again at its reschedule date (state
``up_for_reschedule``), so a thousand waiting sensors hold no slot. ``timeout``
counts from the try's first poke, across reschedules; past it the sensor fails
without retrying, or is skipped with ``soft_fail``.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from flowsched.db.engine import session_scope
from flowsched.exceptions import (
    AirflowFailException,
    AirflowRescheduleException,
    AirflowSensorTimeout,
    DagDefinitionError,
    SkipTask,
)
from flowsched.lifecycle import poke_history
from flowsched.operators.base import BaseOperator
from flowsched.timezone import utcnow

MODES = ("poke", "reschedule")


@dataclass
class PokeReturnValue:
    """What ``poke`` may return instead of a bool: done or not, and the task's XCom value."""

    is_done: bool
    xcom_value: Any = None

    def __bool__(self) -> bool:
        return self.is_done


def _seconds(name: str, value: Any, task_id: str, *, allow_none: bool = False) -> float | None:
    if value is None and allow_none:
        return None
    if isinstance(value, timedelta):
        value = value.total_seconds()
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise DagDefinitionError(
            f"task '{task_id}': {name} must be a timedelta or seconds, got {value!r}"
        )
    if value < 0:
        raise DagDefinitionError(f"task '{task_id}': {name} must not be negative, got {value!r}")
    return float(value)


class BaseSensorOperator(BaseOperator):
    """Subclasses implement :meth:`poke`."""

    def __init__(
        self,
        task_id: str,
        *,
        poke_interval: timedelta | float = 60,
        timeout: timedelta | float = 60 * 60 * 24 * 7,
        soft_fail: bool = False,
        mode: str = "poke",
        exponential_backoff: bool = False,
        max_wait: timedelta | float | None = None,
        silent_fail: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(task_id, **kwargs)
        self.poke_interval = _seconds("poke_interval", poke_interval, task_id)
        self.timeout = _seconds("timeout", timeout, task_id)
        self.max_wait = _seconds("max_wait", max_wait, task_id, allow_none=True)
        if mode not in MODES:
            raise DagDefinitionError(
                f"task '{task_id}': mode must be one of {', '.join(MODES)}, got {mode!r}"
            )
        self.mode = mode
        self.soft_fail = soft_fail
        self.exponential_backoff = exponential_backoff
        self.silent_fail = silent_fail

    @property
    def reschedule(self) -> bool:
        return self.mode == "reschedule"

    def poke(self, context: dict[str, Any]) -> bool | PokeReturnValue:
        raise NotImplementedError(f"{type(self).__name__} must implement poke(context)")

    def execute(self, context: dict[str, Any]) -> Any:
        started_at, poke_count = self._started(context)
        while True:
            try:
                result = self.poke(context)
            except SkipTask:
                raise
            except AirflowFailException as exc:  # includes AirflowSensorTimeout
                if self.soft_fail:
                    raise SkipTask(f"{exc} (soft_fail)") from None
                raise
            except Exception:
                if not self.silent_fail:
                    raise
                self.log_poke_error()
                result = False
            if result:
                return result.xcom_value if isinstance(result, PokeReturnValue) else None
            waited = (utcnow() - started_at).total_seconds()
            if waited > self.timeout:
                message = (
                    f"sensor '{self.task_id}' timed out after {waited:.0f} s "
                    f"(timeout {self.timeout:g} s)"
                )
                if self.soft_fail:
                    raise SkipTask(message)
                raise AirflowSensorTimeout(message)
            interval = self.next_poke_interval(started_at, waited, poke_count)
            if self.reschedule:
                raise AirflowRescheduleException(utcnow() + timedelta(seconds=interval))
            time.sleep(interval)
            poke_count += 1

    def log_poke_error(self) -> None:
        import logging

        logging.getLogger("flowsched.task").warning(
            "sensor '%s': poke failed (silent_fail): treated as not done",
            self.task_id,
            exc_info=True,
        )

    def _started(self, context: dict[str, Any]) -> tuple[datetime, int]:
        """(first poke of this try, its poke number): from task_reschedule when rescheduled."""
        now = utcnow()
        ti = context.get("ti")
        if not self.reschedule or ti is None or getattr(ti, "ti_id", None) is None:
            return now, 1
        with session_scope(read_only=True) as session:
            first, count = poke_history(session, ti.ti_id, context["try_number"])
        return (first or now), count + 1

    def next_poke_interval(self, started_at: datetime, waited: float, poke_count: int) -> float:
        """``poke_interval``, or with ``exponential_backoff`` one that doubles with each poke
        (with a jitter fixed by the task and poke), never past ``max_wait`` nor the timeout."""
        if not self.exponential_backoff:
            return self.poke_interval
        base = max(self.poke_interval * 2 ** max(poke_count - 1, 0), 1.0)
        dag_id = getattr(self.dag, "dag_id", "")
        seed = f"{dag_id}#{self.task_id}#{started_at.isoformat()}#{poke_count}"
        jitter = int(hashlib.sha1(seed.encode()).hexdigest(), 16) % 1000 / 1000
        interval = min(base * (1 + jitter), max(self.timeout - waited, 0.0))
        if self.max_wait is not None:
            interval = min(interval, self.max_wait)
        return interval
