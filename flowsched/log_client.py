"""Fetching a try's log for the CLI and the webserver, wherever the try ran.

A log written on this machine is read from disk. Logs written on other
workers are fetched from that worker's log server (see the distributed
execution code); until then, this module reads local files only.
"""

from __future__ import annotations

from flowsched.exceptions import FlowschedError
from flowsched.task_logs import log_path, read_local_log


class LogUnavailable(FlowschedError):
    """The log cannot be shown; the message says why and where it was looked for."""


def fetch_task_log(
    hostname: str | None, dag_id: str, run_id: str, task_id: str, try_number: int
) -> str:
    text = read_local_log(dag_id, run_id, task_id, try_number)
    if text is not None:
        return text
    raise LogUnavailable(
        f"no log for {dag_id}.{task_id} try {try_number} at "
        f"{log_path(dag_id, run_id, task_id, try_number)} (ran on {hostname or 'unknown host'})"
    )
