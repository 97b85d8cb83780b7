"""Riding out an outage of the metadata database or of the broker.

An outage is weather, not death: a component that cannot reach a service
logs it once, backs off (0.5 s doubling up to a cap), logs once again when
the service is back, and carries on. Only past ``[core] outage_tolerance``
seconds of one continuous outage does it give up, with :class:`OutageTooLong`
naming the service and how long it waited, so systemd's restart (or an
operator) takes over with a clear message instead of a silent crash loop.

This module has no database imports: the try process, the worker, the
scheduler and the DAG processor all use it, each telling it what counts as
an outage (see :func:`flowsched.db.engine.is_db_outage`).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import TypeVar

from flowsched.exceptions import FlowschedError

T = TypeVar("T")

FIRST_DELAY = 0.5
MAX_DELAY = 10.0
# Exit code of a try process that ended but could not record its result within the
# tolerance (EX_TEMPFAIL): its worker must not record a crash in its place.
EXIT_RESULT_NOT_RECORDED = 75


def result_retry_cap(zombie_threshold: float) -> float:
    """Longest wait between a finished try's attempts to record its result: a
    quarter of the zombie threshold (at most MAX_DELAY), so that once the database
    is back the result lands long before the try could be taken for a zombie."""
    return max(0.5, min(MAX_DELAY, zombie_threshold / 4))


class OutageTooLong(FlowschedError):
    """A service stayed unreachable for longer than ``[core] outage_tolerance``."""


class Outage:
    """The state of one service as one component sees it: up, or down since when.

    ``failed()`` is called on each failed attempt and returns how long to wait
    before the next; ``recovered()`` after a successful one. Only the first
    failure and the recovery are logged, so a ten-minute outage is two lines,
    not six hundred tracebacks.
    """

    def __init__(
        self,
        service: str,
        tolerance: float,
        logger: logging.Logger,
        *,
        max_delay: float = MAX_DELAY,
    ) -> None:
        self.service = service
        self.tolerance = tolerance
        self.log = logger
        self.max_delay = max_delay
        self.since: float | None = None
        # When the last outage ended (monotonic), None if there was none.
        self.back_at: float | None = None
        self._delay = FIRST_DELAY

    @property
    def down(self) -> bool:
        return self.since is not None

    def failed(self, exc: BaseException) -> float:
        """Note a failed attempt; the seconds to wait, or OutageTooLong past the tolerance."""
        now = time.monotonic()
        if self.since is None:
            self.since = now
            self._delay = FIRST_DELAY
            self.log.warning(
                "%s unavailable: %s; retrying with backoff for up to %g s "
                "([core] outage_tolerance)",
                self.service,
                exc,
                self.tolerance,
            )
        elapsed = now - self.since
        if elapsed >= self.tolerance:
            raise OutageTooLong(
                f"{self.service} has been unavailable for {elapsed:.0f} s, longer than "
                f"[core] outage_tolerance ({self.tolerance:g} s); giving up: {exc}"
            ) from exc
        delay = min(self._delay, self.max_delay, self.tolerance - elapsed)
        self._delay = min(self._delay * 2, self.max_delay)
        return max(delay, 0.0)

    def recovered(self) -> float | None:
        """Note a successful attempt; how long the outage lasted if there was one."""
        if self.since is None:
            return None
        self.back_at = time.monotonic()
        lasted = self.back_at - self.since
        self.since = None
        self.log.warning("%s is back after %.1f s", self.service, lasted)
        return lasted


def retry_through(
    action: Callable[[], T],
    outage: Outage,
    is_outage: Callable[[BaseException], bool],
    stop: threading.Event | None = None,
) -> T:
    """``action()``, retried while it fails with an outage (as ``is_outage`` tells).

    Other errors propagate at once. ``stop`` (if given and set) ends the wait
    early, re-raising the last outage error.
    """
    while True:
        try:
            result = action()
        except Exception as exc:
            if not is_outage(exc):
                raise
            delay = outage.failed(exc)
            if stop is not None:
                if stop.wait(delay):
                    raise
            else:
                time.sleep(delay)
            continue
        outage.recovered()
        return result
