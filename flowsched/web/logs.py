"""A try's log in the webserver: the tail a page or API answer shows, the whole as a download.

Pages and the API show at most ``webserver.log_tail_bytes`` of a log, its
end, marked truncated when there is more; the whole log is a streamed
download (a local file or the worker's log server, read in chunks), so a
gunicorn worker never holds more than the tail of any log.
"""

from __future__ import annotations

import re

from flask import Response

from flowsched.config import get_config
from flowsched.db.models import TaskTry
from flowsched.exceptions import TaskNotFound
from flowsched.task_logs.client import fetch_task_log_tail, open_task_log
from flowsched.task_logs.files import LogTail


def chosen_try(
    tries: list[TaskTry], dag_id: str, run_id: str, task_id: str, number: int
) -> TaskTry:
    attempt = next((t for t in tries if t.try_number == number), None)
    if attempt is None:
        raise TaskNotFound(f"{dag_id}.{task_id} in run '{run_id}' has no try {number}")
    return attempt


def log_tail(attempt: TaskTry, dag_id: str, run_id: str, task_id: str) -> LogTail:
    """The end of the try's log; raises LogUnavailable (a FlowschedError) saying why not."""
    limit = get_config().webserver.log_tail_bytes
    return fetch_task_log_tail(
        attempt.hostname, dag_id, run_id, task_id, attempt.try_number, limit, attempt.map_index
    )


def download_name(dag_id: str, run_id: str, task_id: str, try_number: int) -> str:
    return re.sub(r"[^A-Za-z0-9_.\-]", "_", f"{dag_id}.{task_id}.{run_id}.try{try_number}.log")


def log_download(attempt: TaskTry, dag_id: str, run_id: str, task_id: str) -> Response:
    """The whole log as a streamed text/plain attachment; LogUnavailable before any byte."""
    stream = open_task_log(
        attempt.hostname, dag_id, run_id, task_id, attempt.try_number, attempt.map_index
    )
    name = download_name(dag_id, run_id, task_id, attempt.try_number)
    response = Response(
        iter(stream),
        mimetype="text/plain",
        headers={
            "Content-Length": str(stream.length),
            "Content-Disposition": f'attachment; filename="{name}"',
        },
    )
    response.call_on_close(stream.close)
    return response
