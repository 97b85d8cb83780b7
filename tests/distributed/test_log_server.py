"""The log server serves only logs, only with a fresh token for that file."""

from __future__ import annotations

import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import pytest
from itsdangerous import TimestampSigner

from flowsched.log_client import LogUnavailable, fetch_task_log, follow_task_log
from flowsched.task_logs import relative_log_path
from flowsched.worker.log_server import LogServer, start_log_server
from flowsched.worker.log_tokens import TOKEN_TTL, sign
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
    server = start_log_server("127.0.0.1", free_port(), base, SECRET)
    yield server, base
    server.shutdown()
    server.server_close()


def _get(server: LogServer, path: str, token: str | None, offset: int = 0) -> tuple[int, str]:
    port = server.server_address[1]
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/log/{path}?offset={offset}", headers=headers
    )
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


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


def test_the_client_fetches_remote_logs_and_says_why_when_it_cannot(
    sqlite_home: Home, served: tuple[LogServer, Path]
) -> None:
    server, _ = served
    sqlite_home.configure(
        core={"executor": "celery", "secret_key": SECRET},
        worker={"log_server_port": str(server.server_address[1])},
    )
    # 127.0.0.1 is not this process's hostname, and its log folder is empty: HTTP.
    assert fetch_task_log("127.0.0.1", "etl", "manual__1", "load", 1) == "line one\nline two ✓\n"
    chunks = list(
        follow_task_log("127.0.0.1", "etl", "manual__1", "load", 1, finished=lambda: True)
    )
    assert "".join(chunks) == "line one\nline two ✓\n"

    with pytest.raises(LogUnavailable, match="answered 404: no log dag_id=etl"):
        fetch_task_log("127.0.0.1", "etl", "manual__1", "load", 2)
    with pytest.raises(
        LogUnavailable, match=r"cannot reach the log server of 127\.0\.0\.9 at http"
    ):
        fetch_task_log("127.0.0.9", "etl", "manual__1", "load", 1)
    with pytest.raises(LogUnavailable, match="no host recorded"):
        fetch_task_log(None, "etl", "manual__1", "load", 1)

    sqlite_home.configure(
        core={"executor": "celery", "secret_key": "a-wrong-but-strong-secret-9e7c5a3f1d0b8e6c"}
    )
    with pytest.raises(LogUnavailable, match="answered 403: bad token signature"):
        fetch_task_log("127.0.0.1", "etl", "manual__1", "load", 1)


def test_a_local_file_is_read_without_any_server(sqlite_home: Home) -> None:
    path = sqlite_home.logs / relative_log_path("etl", "r", "t", 1)
    path.parent.mkdir(parents=True)
    path.write_text("written here")
    assert fetch_task_log("10.255.255.1", "etl", "r", "t", 1) == "written here"
