"""Ansible callback for the lab's runs: at the end of a playbook, the tasks
that took longest (wall time, from the task's start to the next task's),
the number of tasks and their total, so a slow CI stage says where its time
went. ansible-core has no such callback (profile_tasks is in ansible.posix,
which Galaxy would bring and this machine cannot reach).

Enabled by the molecule scenarios (ANSIBLE_CALLBACKS_ENABLED=task_times);
FLOWSCHED_TASK_TIMES_TOP sets how many tasks are listed (default 15).
"""

from __future__ import annotations

import os
import time

from ansible.plugins.callback import CallbackBase

DOCUMENTATION = """
name: task_times
type: aggregate
short_description: the slowest tasks of a playbook run, with their wall time
description:
  - At the end of a run, prints the slowest tasks and the total number of tasks.
requirements:
  - enable in configuration
"""


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "aggregate"
    CALLBACK_NAME = "task_times"
    CALLBACK_NEEDS_ENABLED = True

    def __init__(self) -> None:
        super().__init__()
        self._times: dict[str, float] = {}  # task name -> seconds, over every task of that name
        self._started_tasks = 0
        self._current: str | None = None
        self._started = 0.0
        self._run_started = time.monotonic()

    def _close_current(self) -> None:
        if self._current is not None:
            elapsed = time.monotonic() - self._started
            self._times[self._current] = self._times.get(self._current, 0.0) + elapsed
            self._current = None

    def _open(self, task, kind: str = "") -> None:
        self._close_current()
        self._current = f"{kind}{task.get_name()}"
        self._started_tasks += 1
        self._started = time.monotonic()

    def v2_playbook_on_task_start(self, task, is_conditional) -> None:
        self._open(task)

    def v2_playbook_on_handler_task_start(self, task) -> None:
        self._open(task, "handler: ")

    def v2_playbook_on_play_start(self, play) -> None:
        self._close_current()

    def v2_playbook_on_stats(self, stats) -> None:
        self._close_current()
        top = int(os.environ.get("FLOWSCHED_TASK_TIMES_TOP", "15"))
        total = time.monotonic() - self._run_started
        in_tasks = sum(self._times.values())
        self._display.display(
            f"task times: {self._started_tasks} tasks started ({len(self._times)} names),"
            f" {in_tasks:.0f} s in tasks of {total:.0f} s; slowest, by name:"
        )
        slowest = sorted(self._times.items(), key=lambda item: item[1], reverse=True)[:top]
        for name, seconds in slowest:
            self._display.display(f"  {seconds:7.1f} s  {name}")
