"""LocalExecutor: a pool of ``parallelism`` processes on this machine.

The pool processes are forked once when the scheduler starts; each try is
then forked again from a pool process (see :func:`flowsched.supervisor.fork_and_run`),
so every try gets a fresh process at the cost of a fork, not of a Python start.
Pool processes and their tries die with the scheduler (parent-death signals).
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import queue as queue_module
import signal
import threading
import time
from typing import Any

from flowsched.config import get_config
from flowsched.executors.base import BaseExecutor, ExecutorEvent
from flowsched.hostname import get_hostname
from flowsched.workloads import RECORDED, Workload

log = logging.getLogger(__name__)


def _pool_process(tasks: Any, results: Any, parent: int, nodename: str, recorded: int) -> None:
    from flowsched.processes import set_parent_death_signal
    from flowsched.supervisor import TryNotStarted, announce_results_to, fork_and_run, record_crash

    announce_results_to(recorded)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # Not the scheduler's handler, inherited through the fork: SIGTERM ends an idle pool
    # process (fork_and_run forwards it to a running try). The inherited handler (set
    # the loop's wakeup Event) swallowed it, and re-entered by a second SIGTERM while
    # it held that Event's lock, deadlocked the process for good.
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    # The scheduler died (even kill -9): SIGTERM, which interrupts the running try
    # (recorded as interrupted, retried) and ends this process.
    set_parent_death_signal(signal.SIGTERM, parent=parent)
    while True:
        if os.getppid() != parent:
            return  # the scheduler died: take no new work
        try:
            item = tasks.get(timeout=1.0)
        except queue_module.Empty:
            continue
        if item is None:
            return
        workload = Workload.from_dict(item)
        reason = None
        try:
            code, claimed = fork_and_run(workload, nodename=nodename)
        except TryNotStarted as exc:
            code, claimed, reason = 1, False, str(exc)
        if code != 0:
            # Recorded here, with what killed it, once nothing of the try is left;
            # if this fails the scheduler records the bare exit code from the event.
            try:
                record_crash(workload, nodename, code, reason, claimed=claimed)
            except Exception:
                log.exception("could not record the crash of %s", workload.describe())
        results.put((workload.ti_id, workload.try_number, code))


class LocalExecutor(BaseExecutor):
    name = "local"
    tasks_die_with_scheduler = True

    def __init__(self, parallelism: int | None = None) -> None:
        super().__init__()
        self.parallelism = parallelism or get_config().core.parallelism
        self._context = multiprocessing.get_context("fork")
        self._tasks: Any = None
        self._results: Any = None
        self._processes: list[Any] = []
        # Tries queued whose result is neither recorded nor reported yet: (ti id, try number).
        self._in_flight: set[tuple[int, int]] = set()
        # Tries that announced their result recorded, until their pool process reports
        # their end: that report (exit code 0) then tells the scheduler nothing new.
        self._recorded: set[tuple[int, int]] = set()
        self._events: list[ExecutorEvent] = []
        self._lock = threading.Lock()
        self._reader: threading.Thread | None = None
        self._closing = False

    def start(self) -> None:
        self._tasks = self._context.Queue()
        self._results = self._context.Queue()
        nodename = f"local@{get_hostname()}"
        # Tries write their key here once their result is committed (supervisor.run_try):
        # their slot is free and the pass for their downstream tasks starts then.
        # Close-on-exec, so no task's subprocess holds it; non-blocking for the writers.
        recorded_r, recorded_w = os.pipe2(os.O_CLOEXEC)
        os.set_blocking(recorded_w, False)
        for _ in range(self.parallelism):
            process = self._context.Process(
                target=_pool_process,
                args=(self._tasks, self._results, os.getpid(), nodename, recorded_w),
                daemon=False,
            )
            process.start()
            self._processes.append(process)
        # Only the pool processes (and their tries) write: the reader sees end of file
        # once they have all ended.
        os.close(recorded_w)
        self._reader = threading.Thread(target=self._read_results, daemon=True, name="results")
        self._reader.start()
        threading.Thread(
            target=self._read_recorded, args=(recorded_r,), daemon=True, name="recorded"
        ).start()

    def _read_results(self) -> None:
        while True:
            item = self._results.get()
            if item is None:
                return
            ti_id, try_number, code = item
            key = (ti_id, try_number)
            with self._lock:
                self._in_flight.discard(key)
                if key in self._recorded:
                    self._recorded.discard(key)
                    if code == 0:
                        continue  # recorded, and ended cleanly: nothing for the scheduler
                self._events.append(ExecutorEvent(ti_id, try_number, code))
            self.wakeup.set()

    def _read_recorded(self, fd: int) -> None:
        """A try's result is recorded: its slot is free now (the next workload waits in
        the queue the few milliseconds its pool process takes to clean up), and its
        downstream tasks can be decided."""
        pending = b""
        try:
            while chunk := os.read(fd, RECORDED.size * 64):
                pending += chunk
                whole = len(pending) - len(pending) % RECORDED.size
                with self._lock:
                    for key in RECORDED.iter_unpack(pending[:whole]):
                        if key in self._in_flight:  # else its end was reported first
                            self._in_flight.discard(key)
                            self._recorded.add(key)
                pending = pending[whole:]
                self.wakeup.set()
        finally:
            os.close(fd)

    def queue(self, workload: Workload) -> None:
        with self._lock:
            self._in_flight.add((workload.ti_id, workload.try_number))
        self._tasks.put(workload.to_dict())

    def slots_available(self) -> int:
        with self._lock:
            return self.parallelism - len(self._in_flight)

    def sync(self) -> list[ExecutorEvent]:
        with self._lock:
            events, self._events = self._events, []
        return events

    def end(self, grace: float) -> None:
        if not self._processes:
            return
        for _ in self._processes:
            self._tasks.put(None)
        deadline = time.monotonic() + grace
        for process in self._processes:
            process.join(max(0.0, deadline - time.monotonic()))
        for process in self._processes:
            if process.is_alive():
                # SIGTERM: the pool process forwards it to its try, which records
                # itself as interrupted (up for retry) and exits.
                process.terminate()
        for process in self._processes:
            process.join(30)
        self._results.put(None)
        if self._reader is not None:
            self._reader.join(5)
        with contextlib.suppress(Exception):
            self._tasks.close()
        self._processes = []
