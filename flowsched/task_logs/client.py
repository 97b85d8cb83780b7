"""Reading a try's log for the CLI and the webserver, wherever the try ran.

A log present on this machine (this is the worker that ran it, or the log
folder is shared) is read from disk through :mod:`flowsched.task_logs.files`.
Otherwise it is fetched from the log server of the host recorded on the try,
``http(s)://{hostname}:{log_server_port}`` (HTTPS, the server's certificate
checked, when ``[worker] log_server_ssl_ca`` is set), with a token signed by
``core.secret_key`` for that one file. Any failure becomes
:class:`LogUnavailable` with a message that says where it looked.

Every read is bounded: the tail for pages and the API, a bounded chunk per
poll for ``--follow``, and a stream of chunks for downloads and
``flowsched tasks log``, so a log of any size costs a fixed amount of memory.
"""

from __future__ import annotations

import codecs
import contextlib
import http.client
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from types import TracebackType
from typing import BinaryIO
from urllib.parse import quote, urlencode

from flowsched.config import get_config
from flowsched.exceptions import FlowschedError
from flowsched.hostname import get_hostname
from flowsched.task_logs.files import (
    CHUNK_SIZE,
    LogRefused,
    LogTail,
    base_folder,
    file_size,
    iter_chunks,
    open_log,
    read_range,
    read_tail,
    relative_log_path,
)
from flowsched.task_logs.tokens import sign
from flowsched.tls import log_client_context

FETCH_TIMEOUT = 10.0
FOLLOW_CHUNK = 1024 * 1024  # the most one --follow poll reads


class LogUnavailable(FlowschedError):
    """The log cannot be shown; the message says why and where it was looked for."""


class LogStream:
    """An opened log, on disk or a log server's answer: ``length`` bytes, in chunks.

    Opening fails before the first byte (so a web view can still answer 404);
    iterate to read, and close it (or use ``with``) when done.
    """

    def __init__(self, chunks: Iterator[bytes], length: int, close: Callable[[], None]) -> None:
        self.length = length
        self._chunks = chunks
        self._close = close

    def __iter__(self) -> Iterator[bytes]:
        return self._chunks

    def close(self) -> None:
        self._close()

    def __enter__(self) -> LogStream:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def log_url(hostname: str, relative: str) -> str:
    host = f"[{hostname}]" if ":" in hostname else hostname
    conf = get_config().worker
    scheme = "https" if conf.log_server_ssl_ca else "http"
    return f"{scheme}://{host}:{conf.log_server_port}/log/{quote(relative)}"


def _local_or_host(hostname: str | None, relative: str) -> BinaryIO | str:
    """The log opened from this machine's folder, else the host whose log server has it."""
    try:
        return open_log(relative)
    except FileNotFoundError:
        pass
    except LogRefused as exc:
        raise LogUnavailable(str(exc)) from None
    local_path = base_folder() / relative
    if not hostname:
        raise LogUnavailable(f"no log at {local_path} and no host recorded for this try")
    if hostname == get_hostname():
        raise LogUnavailable(f"no log at {local_path} on {hostname}, where the try ran")
    return hostname


def _request(hostname: str, relative: str, **params: int) -> http.client.HTTPResponse:
    url = log_url(hostname, relative)
    request = urllib.request.Request(
        f"{url}?{urlencode(params)}", headers={"Authorization": f"Bearer {sign(relative)}"}
    )
    try:
        return urllib.request.urlopen(request, timeout=FETCH_TIMEOUT, context=log_client_context())
    except urllib.error.HTTPError as exc:
        with exc:
            reason = exc.read(2000).decode("utf-8", "replace").strip() or exc.reason
        raise LogUnavailable(f"log server of {hostname} answered {exc.code}: {reason}") from None
    except (urllib.error.URLError, OSError) as exc:
        why = getattr(exc, "reason", exc)
        raise LogUnavailable(
            f"cannot reach the log server of {hostname} at {url}: {why} "
            "(is its worker running, and worker.log_server_port open?)"
        ) from None


def _chunks_of(response: http.client.HTTPResponse, hostname: str, limit: int) -> Iterator[bytes]:
    """The answer's body in chunks, never more than ``limit`` bytes in all."""
    left = limit
    while left > 0:
        try:
            data = response.read(min(CHUNK_SIZE, left))
        except OSError as exc:
            raise LogUnavailable(f"log server of {hostname} stopped answering: {exc}") from None
        if not data:
            return
        left -= len(data)
        yield data


def _header(response: http.client.HTTPResponse, name: str, default: int) -> int:
    try:
        return int(response.headers.get(name, default))
    except ValueError:
        return default


def fetch_log_tail(hostname: str | None, relative: str, limit: int) -> LogTail:
    """The last ``limit`` bytes of a log (from the start of a line), and its size."""
    where = _local_or_host(hostname, relative)
    if not isinstance(where, str):
        with contextlib.closing(where):
            return read_tail(where, limit)
    with _request(where, relative, tail=limit) as response:
        data = b"".join(_chunks_of(response, where, limit))
        size = _header(response, "X-Log-Size", len(data))
        start = _header(response, "X-Log-Offset", size - len(data))
    return LogTail(data, start, size)


def fetch_log_bytes(
    hostname: str | None, relative: str, offset: int = 0, limit: int = FOLLOW_CHUNK
) -> bytes:
    """At most ``limit`` bytes of the log from byte ``offset``."""
    where = _local_or_host(hostname, relative)
    if not isinstance(where, str):
        with contextlib.closing(where):
            return read_range(where, offset, limit)
    with _request(where, relative, offset=offset, length=limit) as response:
        return b"".join(_chunks_of(response, where, limit))


def open_log_stream(hostname: str | None, relative: str, offset: int = 0) -> LogStream:
    """The log from byte ``offset`` to its size now, as a stream of chunks."""
    where = _local_or_host(hostname, relative)
    if not isinstance(where, str):
        size = file_size(where)
        return LogStream(iter_chunks(where, offset, size), max(0, size - offset), where.close)
    response = _request(where, relative, offset=offset)
    length = _header(response, "Content-Length", 0)
    return LogStream(_chunks_of(response, where, length), length, response.close)


def fetch_task_log_tail(
    hostname: str | None,
    dag_id: str,
    run_id: str,
    task_id: str,
    try_number: int,
    limit: int,
    map_index: int = -1,
) -> LogTail:
    """The tail of one try's log, for a page or an API answer."""
    relative = relative_log_path(dag_id, run_id, task_id, try_number, map_index)
    return fetch_log_tail(hostname, relative, limit)


def open_task_log(
    hostname: str | None,
    dag_id: str,
    run_id: str,
    task_id: str,
    try_number: int,
    map_index: int = -1,
) -> LogStream:
    """The whole log of one try, as a stream (downloads, ``flowsched tasks log``)."""
    relative = relative_log_path(dag_id, run_id, task_id, try_number, map_index)
    return open_log_stream(hostname, relative)


def follow_task_log(
    hostname: str | None,
    dag_id: str,
    run_id: str,
    task_id: str,
    try_number: int,
    *,
    finished: Callable[[], bool],
    interval: float = 1.0,
    map_index: int = -1,
) -> Iterator[str]:
    """Yield the log as it grows until ``finished()`` is true and nothing new came.

    ``finished`` is read before each round of reads, so the text written
    between the last poll and the end of the try is still yielded. Each read
    is at most :data:`FOLLOW_CHUNK` bytes; a full one is followed at once.
    """
    relative = relative_log_path(dag_id, run_id, task_id, try_number, map_index)
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    offset = 0
    while True:
        done = finished()
        while True:
            chunk = fetch_log_bytes(hostname, relative, offset)
            offset += len(chunk)
            text = decoder.decode(chunk)
            if text:
                yield text
            if len(chunk) < FOLLOW_CHUNK:
                break
        if done:
            rest = decoder.decode(b"", final=True)
            if rest:
                yield rest
            return
        time.sleep(interval)
