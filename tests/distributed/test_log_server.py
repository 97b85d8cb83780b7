"""The log server serves only logs, only with a fresh token for that file, in bounded chunks."""

from __future__ import annotations

import os
import time
import tracemalloc
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import pytest
from itsdangerous import TimestampSigner

from flowsched.task_logs.client import (
    LogUnavailable,
    fetch_task_log_tail,
    follow_task_log,
    open_task_log,
)
from flowsched.task_logs.files import relative_log_path
from flowsched.task_logs.server import LogServer, start_log_server
from flowsched.task_logs.tokens import TOKEN_TTL, sign
from tests.conftest import Home
from tests.servers import free_port

SECRET = "log-server-test-secret-3d5f7a9c1e0b2d4f6a8c"
RELATIVE = relative_log_path("etl", "manual__1", "load", 1)


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[LogServer, Path]]:
    base = tmp_path / "logs"
    (base / RELATIVE).parent.mkdir(parents=True)
    (base / RELATIVE).write_text("line one\nline two ✓\n")
    (tmp_path / "secret.txt").write_text("not a log")
    (base / "escape.log").symlink_to(tmp_path / "secret.txt")
    (base / "inside.log").symlink_to(base / RELATIVE)
    (base / "dev-zero.log").symlink_to("/dev/zero")
    os.mkfifo(base / "fifo.log")
    server = start_log_server("127.0.0.1", free_port(), base, SECRET)
    yield server, base
    server.shutdown()
    server.server_close()


def _get(
    server: LogServer, path: str, token: str | None, offset: int | str = 0, query: str = ""
) -> tuple[int, str]:
    port = server.server_address[1]
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/log/{path}?offset={offset}{query}", headers=headers
    )
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, response.read(1 << 20).decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read(1 << 20).decode()


def test_a_valid_token_reads_the_file_and_offsets_tail_it(served: tuple[LogServer, Path]) -> None:
    server, _ = served
    assert _get(server, quote(RELATIVE), sign(RELATIVE, SECRET)) == (
        200,
        "line one\nline two ✓\n",
    )
    assert _get(server, quote(RELATIVE), sign(RELATIVE, SECRET), offset=9) == (
        200,
        "line two ✓\n",
    )


@pytest.mark.parametrize(
    ("path", "token", "status", "reason"),
    [
        (RELATIVE, None, 403, "missing token"),
        (RELATIVE, "garbage", 403, "bad token signature"),
        (RELATIVE, (RELATIVE, "another-cluster"), 403, "bad token signature"),
        (RELATIVE, ("dag_id=etl/other.log", SECRET), 403, "issued for another file"),
        ("../secret.txt", ("../secret.txt", SECRET), 403, "outside the log folder"),
        ("%2e%2e/secret.txt", ("../secret.txt", SECRET), 403, "outside the log folder"),
        ("escape.log", ("escape.log", SECRET), 403, "outside the log folder"),
        ("dev-zero.log", ("dev-zero.log", SECRET), 403, "outside the log folder"),
        ("inside.log", ("inside.log", SECRET), 403, "is a symlink; logs are never followed"),
        ("fifo.log", ("fifo.log", SECRET), 403, "not a regular file"),
        ("dag_id=etl", ("dag_id=etl", SECRET), 403, "not a regular file"),
        ("/etc/passwd", ("/etc/passwd", SECRET), 403, "outside the log folder"),
        ("nope.log", ("nope.log", SECRET), 404, "no log nope.log"),
    ],
)
def test_refusals(
    served: tuple[LogServer, Path],
    path: str,
    token: str | tuple[str, str] | None,
    status: int,
    reason: str,
) -> None:
    """``token`` is a literal, or (path, secret) to sign now (tokens live 60 s)."""
    server, _ = served
    if isinstance(token, tuple):
        token = sign(*token)
    code, body = _get(server, path, token)
    assert (code, reason in body) == (status, True), body
    assert "not a log" not in body


def test_an_expired_token_is_refused(
    served: tuple[LogServer, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    server, _ = served
    issued = int(time.time()) - TOKEN_TTL - 5
    with monkeypatch.context() as patch:
        patch.setattr(TimestampSigner, "get_timestamp", lambda self: issued)
        old = sign(RELATIVE, SECRET)
    code, body = _get(server, quote(RELATIVE), old)
    assert code == 403
    assert "token expired" in body


def _client_of(home: Home, server: LogServer) -> None:
    """Configure this process as a cluster member whose workers' log servers are ``server``."""
    home.configure(
        core={"executor": "celery", "secret_key": SECRET},
        worker={"log_server_port": str(server.server_address[1])},
    )


def test_the_client_fetches_remote_logs_and_says_why_when_it_cannot(
    sqlite_home: Home, served: tuple[LogServer, Path]
) -> None:
    server, _ = served
    _client_of(sqlite_home, server)
    # 127.0.0.1 is not this process's hostname, and its log folder is empty: HTTP.
    tail = fetch_task_log_tail("127.0.0.1", "etl", "manual__1", "load", 1, limit=100)
    assert tail.text() == "line one\nline two ✓\n" and not tail.truncated
    tail = fetch_task_log_tail("127.0.0.1", "etl", "manual__1", "load", 1, limit=16)
    assert tail.text() == "line two ✓\n" and tail.truncated and tail.size == 22
    with open_task_log("127.0.0.1", "etl", "manual__1", "load", 1) as stream:
        assert stream.length == 22 and b"".join(stream).decode() == "line one\nline two ✓\n"
    chunks = list(
        follow_task_log("127.0.0.1", "etl", "manual__1", "load", 1, finished=lambda: True)
    )
    assert "".join(chunks) == "line one\nline two ✓\n"

    with pytest.raises(LogUnavailable, match="answered 404: no log dag_id=etl"):
        open_task_log("127.0.0.1", "etl", "manual__1", "load", 2)
    with pytest.raises(
        LogUnavailable, match=r"cannot reach the log server of 127\.0\.0\.9 at http"
    ):
        open_task_log("127.0.0.9", "etl", "manual__1", "load", 1)
    with pytest.raises(LogUnavailable, match="no host recorded"):
        fetch_task_log_tail(None, "etl", "manual__1", "load", 1, limit=10)

    sqlite_home.configure(
        core={"executor": "celery", "secret_key": "a-wrong-but-strong-secret-9e7c5a3f1d0b8e6c"}
    )
    with pytest.raises(LogUnavailable, match="answered 403: bad token signature"):
        fetch_task_log_tail("127.0.0.1", "etl", "manual__1", "load", 1, limit=10)


def test_a_local_file_is_read_without_any_server(sqlite_home: Home) -> None:
    path = sqlite_home.logs / relative_log_path("etl", "r", "t", 1)
    path.parent.mkdir(parents=True)
    path.write_text("written here")
    assert (
        fetch_task_log_tail("10.255.255.1", "etl", "r", "t", 1, limit=99).text() == "written here"
    )


def test_tail_offset_and_length_are_bounded_and_checked(served: tuple[LogServer, Path]) -> None:
    server, _ = served
    token = sign(RELATIVE, SECRET)
    assert _get(server, quote(RELATIVE), token, 0, "&length=4") == (200, "line")
    assert _get(server, quote(RELATIVE), token, 9, "&length=4") == (200, "line")
    assert _get(server, quote(RELATIVE), token, 99) == (200, "")
    # ?tail starts at the next line inside the last N bytes
    assert _get(server, quote(RELATIVE), token, 0, "&tail=15") == (200, "line two ✓\n")
    for bad in ("-1", "x"):
        code, body = _get(server, quote(RELATIVE), token, bad)
        assert code == 400 and ("negative" in body or "integers" in body), body


def test_a_large_log_crosses_server_and_client_in_bounded_memory(
    sqlite_home: Home, served: tuple[LogServer, Path]
) -> None:
    """32 MiB through the log server thread and the client, both in this process."""
    server, base = served
    _client_of(sqlite_home, server)
    relative = relative_log_path("etl", "big", "load", 1)
    (base / relative).parent.mkdir(parents=True)
    size = 32 * 1024 * 1024
    with (base / relative).open("wb") as sink:
        for n in range(size // 65536):
            sink.write(bytes([97 + n % 26]) * 65535 + b"\n")
    tracemalloc.start()
    try:
        total = 0
        with open_task_log("127.0.0.1", "etl", "big", "load", 1) as stream:
            assert stream.length == size
            for chunk in stream:
                total += len(chunk)
        tail = fetch_task_log_tail("127.0.0.1", "etl", "big", "load", 1, limit=1 << 20)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert total == size
    assert tail.truncated and tail.size == size and len(tail.data) == 1 << 20
    assert peak < 4 * 1024 * 1024, f"32 MiB through the log server peaked at {peak} bytes"
