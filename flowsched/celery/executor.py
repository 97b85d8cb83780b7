"""CeleryExecutor: tries travel to workers on other machines through the broker.

The message is the workload's JSON dict (ids and the DAG file's fingerprint,
a few hundred bytes), routed to the Celery queue named by the task's
``queue``. Two threads keep the scheduler loop off the network:

* the *sender* publishes queued workloads. When the broker is unreachable
  it logs it once and retries with backoff (0.5 s doubling to 10 s), logging
  again when the broker is back; the workloads wait in memory (the
  scheduler's queued-timeout sweep knows them, see :meth:`not_yet_late`, and
  counts their time from when they were sent) and :meth:`slots_available`
  shrinks, so the scheduler stops queuing more. If the scheduler dies
  meanwhile, or Redis restarts without the messages it held, the tries are
  still ``queued`` in the database and ``scheduler.task_queued_timeout``
  re-queues them as lost, without spending a retry: nothing is lost and
  nothing crash-loops.
* the *listener* receives the workers' task events and sets :attr:`wakeup`,
  so a downstream task is scheduled as soon as its upstream ends instead of
  a loop interval later. It is only an optimisation: if events are lost the
  loop still polls every ``scheduler.loop_interval``.

Task state is never read from Celery: the runner writes it to the database.
"""

from __future__ import annotations

import logging
import queue as queue_module
import threading
import time
from typing import Any

from celery import Celery
from kombu.utils.url import maybe_sanitize_url

from flowsched.celery.app import TASK_NAME, make_app
from flowsched.config import get_config
from flowsched.executors.base import BaseExecutor
from flowsched.workloads import Workload

log = logging.getLogger(__name__)

FIRST_RETRY = 0.5
MAX_RETRY = 10.0
# A try sent this long (s) after it was queued waited for the broker: see not_yet_late().
LATE_SEND = 2.0
WAKEUP_EVENTS = ("task-succeeded", "task-failed", "task-rejected", "task-revoked")


def message_id(workload: Workload) -> str:
    """Celery task id: one per try, readable in Flower and the worker log."""
    return f"{workload.dag_id}.{workload.task_id}.{workload.run_id}.try{workload.try_number}"


def publish(app: Celery, workload: Workload, producer: Any = None) -> None:
    """Send one workload to its queue; raises on broker errors (no hidden retries)."""
    app.send_task(
        TASK_NAME,
        args=[workload.to_dict()],
        queue=workload.queue,
        task_id=message_id(workload),
        shadow=f"{workload.dag_id}.{workload.task_id}",
        retry=False,
        producer=producer,
    )


class CeleryExecutor(BaseExecutor):
    name = "celery"
    tasks_die_with_scheduler = False

    def __init__(self, app: Celery | None = None) -> None:
        super().__init__()
        self.app = app or make_app()
        self.capacity = get_config().scheduler.max_tis_per_query
        self._outbox: queue_module.Queue[Workload | None] = queue_module.Queue()
        self._pending = 0
        # (ti id, try number) -> when queued here, until sent; then, if it waited, when sent.
        self._unsent: dict[tuple[int, int], float] = {}
        self._sent_late: dict[tuple[int, int], float] = {}
        self._broker_down_since: float | None = None
        self._lock = threading.Lock()
        self._closing = threading.Event()
        self._sender: threading.Thread | None = None
        self._listener: threading.Thread | None = None
        self._receiver: Any = None

    # -- lifecycle ----------------------------------------------------------
    def start(self) -> None:
        self._sender = threading.Thread(target=self._send_loop, name="celery-sender", daemon=True)
        self._sender.start()
        self._listener = threading.Thread(
            target=self._listen_loop, name="celery-events", daemon=True
        )
        self._listener.start()

    def end(self, grace: float) -> None:
        """Send what is waiting (up to ``grace``, at most 10 s), then stop the threads.

        Running tries are untouched: they belong to the workers, not to us.
        """
        deadline = time.monotonic() + min(grace, 10.0)
        while self._pending_count() and time.monotonic() < deadline:
            time.sleep(0.05)
        if self._pending_count():
            log.warning(
                "%d tries were not sent to the broker before stopping; they stay queued "
                "and scheduler.task_queued_timeout will retry them",
                self._pending_count(),
            )
        self._closing.set()
        self._outbox.put(None)
        if self._receiver is not None:
            self._receiver.should_stop = True
        for thread in (self._sender, self._listener):
            if thread is not None:
                thread.join(5)

    # -- the executor interface ----------------------------------------------
    def queue(self, workload: Workload) -> None:
        with self._lock:
            self._pending += 1
            self._unsent[(workload.ti_id, workload.try_number)] = time.monotonic()
        self._outbox.put(workload)

    def not_yet_late(self, timeout: float) -> set[tuple[int, int]]:
        """Unsent tries, and tries sent less than ``timeout`` s ago: a try held in
        memory through a broker outage starts its queued clock when it is sent."""
        horizon = time.monotonic() - timeout
        with self._lock:
            for key in [key for key, sent in self._sent_late.items() if sent < horizon]:
                del self._sent_late[key]
            return set(self._unsent) | set(self._sent_late)

    def slots_available(self) -> int:
        """Tries the scheduler may queue now: the broker absorbs the backlog,
        but while it is unreachable, at most ``max_tis_per_query`` wait in memory."""
        return max(0, self.capacity - self._pending_count())

    def _pending_count(self) -> int:
        with self._lock:
            return self._pending

    # -- sender ---------------------------------------------------------------
    def _send_loop(self) -> None:
        while True:
            workload = self._outbox.get()
            if workload is None:
                return
            if not self._send_with_backoff(workload):
                return
            now = time.monotonic()
            key = (workload.ti_id, workload.try_number)
            with self._lock:
                self._pending -= 1
                if now - self._unsent.pop(key, now) > LATE_SEND:
                    self._sent_late[key] = now
            if len(self._sent_late) > 10 * self.capacity:
                self.not_yet_late(get_config().scheduler.task_queued_timeout)  # prunes

    def _send_with_backoff(self, workload: Workload) -> bool:
        delay = FIRST_RETRY
        while True:
            try:
                with self.app.producer_or_acquire() as producer:
                    publish(self.app, workload, producer)
            except Exception as exc:
                if self._broker_down_since is None:
                    self._broker_down_since = time.monotonic()
                    log.error(
                        "cannot send %s to the broker %s: %s; %d tries waiting in memory, "
                        "retrying with backoff (up to %g s apart)",
                        workload.describe(),
                        maybe_sanitize_url(self.app.conf.broker_url),
                        exc,
                        self._pending_count(),
                        MAX_RETRY,
                    )
                else:
                    log.debug("broker still unreachable: %s; retrying in %.1f s", exc, delay)
            else:
                if self._broker_down_since is not None:
                    log.warning(
                        "broker %s is back after %.1f s: sending %d waiting tries",
                        maybe_sanitize_url(self.app.conf.broker_url),
                        time.monotonic() - self._broker_down_since,
                        self._pending_count(),
                    )
                    self._broker_down_since = None
                return True
            if self._closing.wait(delay):
                return False
            delay = min(delay * 2, MAX_RETRY)

    # -- listener -------------------------------------------------------------
    def _on_event(self, _event: dict[str, Any]) -> None:
        self.wakeup.set()

    def _listen_loop(self) -> None:
        delay = FIRST_RETRY
        logged = False
        listening = time.monotonic()
        while not self._closing.is_set():
            try:
                with self.app.connection_for_read() as connection:
                    self._receiver = self.app.events.Receiver(
                        connection, handlers=dict.fromkeys(WAKEUP_EVENTS, self._on_event)
                    )
                    if self._closing.is_set():
                        return
                    delay = FIRST_RETRY
                    listening = time.monotonic()
                    self._receiver.capture(limit=None, timeout=None, wakeup=False)
            except Exception as exc:
                if self._closing.is_set():
                    return
                if time.monotonic() - listening > 5:
                    logged = False  # it had been listening: a new outage
                if not logged:  # once per outage; the loop polls the DB meanwhile
                    log.warning("task events unavailable (%s); retrying with backoff", exc)
                    logged = True
                self._closing.wait(delay)
                delay = min(delay * 2, MAX_RETRY)
                continue
            logged = False
