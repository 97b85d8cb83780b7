"""Fetching a try's log for the CLI and the webserver, wherever the try ran.

A log present on this machine (this is the worker that ran it, or the log
folder is shared) is read from disk. Otherwise it is fetched from the log
server of the host recorded on the try, ``http://{hostname}:{log_server_port}``,
with a token signed by ``core.secret_key`` for that one file. Any failure
becomes :class:`LogUnavailable` with a message that says where it looked.
"""

from __future__ import annotations

import codecs
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import quote

from flowsched.config import get_config
from flowsched.exceptions import FlowschedError
from flowsched.hostname import get_hostname
from flowsched.task_logs import relative_log_path
from flowsched.worker.log_tokens import sign

FETCH_TIMEOUT = 10.0
CHUNK = 16 * 1024 * 1024  # the log server's largest answer (log_server.MAX_CHUNK)


class LogUnavailable(FlowschedError):
    """The log cannot be shown; the message says why and where it was looked for."""


def _read_local(path: Path, offset: int) -> bytes | None:
    try:
        with path.open("rb") as handle:
            handle.seek(offset)
            return handle.read()
    except FileNotFoundError:
        return None


def log_url(hostname: str, relative: str) -> str:
    host = f"[{hostname}]" if ":" in hostname else hostname
    port = get_config().worker.log_server_port
    return f"http://{host}:{port}/log/{quote(relative)}"


def _fetch_remote(hostname: str, relative: str, offset: int) -> bytes:
    url = log_url(hostname, relative)
    data = b""
    while True:
        request = urllib.request.Request(
            f"{url}?offset={offset + len(data)}",
            headers={"Authorization": f"Bearer {sign(relative)}"},
        )
        try:
            with urllib.request.urlopen(request, timeout=FETCH_TIMEOUT) as response:
                chunk = response.read()
        except urllib.error.HTTPError as exc:
            reason = exc.read().decode("utf-8", "replace").strip() or exc.reason
            raise LogUnavailable(f"log server of {hostname} answered {exc.code}: {reason}") from exc
        except (urllib.error.URLError, OSError) as exc:
            why = getattr(exc, "reason", exc)
            raise LogUnavailable(
                f"cannot reach the log server of {hostname} at {url}: {why} "
                "(is its worker running, and worker.log_server_port open?)"
            ) from exc
        data += chunk
        if len(chunk) < CHUNK:
            return data


def fetch_log_bytes(hostname: str | None, relative: str, offset: int = 0) -> bytes:
    """The log file from byte ``offset``, from disk if it is here, else from ``hostname``."""
    local_path = Path(get_config().logging.base_log_folder) / relative
    local = _read_local(local_path, offset)
    if local is not None:
        return local
    if not hostname:
        raise LogUnavailable(f"no log at {local_path} and no host recorded for this try")
    if hostname == get_hostname():
        raise LogUnavailable(f"no log at {local_path} on {hostname}, where the try ran")
    return _fetch_remote(hostname, relative, offset)


def fetch_task_log(
    hostname: str | None, dag_id: str, run_id: str, task_id: str, try_number: int
) -> str:
    """The whole log of one try, as text (undecodable bytes replaced)."""
    relative = relative_log_path(dag_id, run_id, task_id, try_number)
    return fetch_log_bytes(hostname, relative).decode("utf-8", errors="replace")


def follow_task_log(
    hostname: str | None,
    dag_id: str,
    run_id: str,
    task_id: str,
    try_number: int,
    *,
    finished: Callable[[], bool],
    interval: float = 1.0,
) -> Iterator[str]:
    """Yield the log as it grows until ``finished()`` is true and nothing new came.

    ``finished`` is read before each fetch, so the text written between the
    last poll and the end of the try is still yielded.
    """
    relative = relative_log_path(dag_id, run_id, task_id, try_number)
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    offset = 0
    while True:
        done = finished()
        chunk = fetch_log_bytes(hostname, relative, offset)
        offset += len(chunk)
        text = decoder.decode(chunk, final=done)
        if text:
            yield text
        if done:
            return
        time.sleep(interval)
