"""Logs in the webserver: the tail on pages and in the API, the whole as a streamed download.

Observed before: a 60 MB log gave a 60 MB page, and a log linked to
/dev/full made a gunicorn worker grow until the kernel killed it.
"""

from __future__ import annotations

import hashlib
import os
import re
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from playwright.sync_api import expect

from flowsched.operations import trigger_dag
from flowsched.task_logs.files import relative_log_path
from flowsched.web.users import create_token, create_user
from tests.harness import drive, parse, run_finished
from tests.servers import free_port, wait_for_port
from tests.web import test_e2e
from tests.web.openapi_check import check
from tests.web.test_e2e import PASSWORD, Stack, log_in, new_page, shot

browser = test_e2e.browser  # the module-scoped Chromium fixture, shared

MiB = 1024 * 1024
LOGGED = """
from datetime import datetime
from flowsched import DAG, BashOperator

with DAG("logged", schedule=None, start_date=datetime(2026, 1, 1)) as dag:
    BashOperator(task_id="say", bash_command="echo hello-from-the-task")
"""
PAGE = "/dags/logged/runs/{run}/tasks/say"
API = "/api/v1/dags/logged/runs/{run}/tasks/say/tries/1/log"


def _run(home, run_id: str) -> Path:
    """A real try of logged.say in run ``run_id``; returns its log file."""
    if not (home.dags / "logged.py").exists():
        home.write_dag("logged.py", LOGGED)
        parse()
    trigger_dag("logged", run_id=run_id)
    drive(run_finished("logged", run_id))
    path = home.logs / relative_log_path("logged", run_id, "say", 1)
    assert "hello-from-the-task" in path.read_text()
    return path


def _grow(path: Path, size: int) -> str:
    """Append numbered lines until the log is ``size`` bytes; returns the whole file's sha256."""
    with path.open("ab") as sink:
        number = 0
        while sink.tell() < size:
            sink.write(b"".join(b"filler line %08d\n" % (number + n) for n in range(4096)))
            number += 4096
        sink.write(b"the very last line\n")
    digest = hashlib.sha256()
    with path.open("rb") as source:
        while chunk := source.read(MiB):
            digest.update(chunk)
    return digest.hexdigest()


def _sha256(chunks) -> tuple[str, int]:
    digest, total = hashlib.sha256(), 0
    for chunk in chunks:
        digest.update(chunk)
        total += len(chunk)
    return digest.hexdigest(), total


def test_pages_and_api_show_the_tail_and_stream_the_whole(home, web):
    path = _run(home, "big")
    whole = _grow(path, 5 * MiB)
    size = path.stat().st_size
    client = web.client("viewer")

    page = client.get(PAGE.format(run="big"))
    assert page.status_code == 200
    assert len(page.data) < MiB + 200_000, len(page.data)  # the tail, not 5 MiB
    text = page.text
    assert 'id="log-truncated"' in text and "Log truncated" in text
    assert "the very last line" in text and "filler line 00000000" not in text
    link = re.search(r'<a href="([^"]+)" id="log-download"', text)
    assert link, "the page links to the whole log"

    download = client.get(link.group(1).replace("&amp;", "&"))
    assert download.status_code == 200 and download.is_streamed
    assert download.headers["Content-Length"] == str(size)
    assert download.headers["Content-Disposition"].startswith("attachment; filename=")
    assert _sha256(download.response) == (whole, size)

    auth = web.api("viewer")
    answer = check(client.get(API.format(run="big"), headers=auth))
    assert answer["truncated"] is True and answer["size"] == size
    assert len(answer["content"].encode()) <= MiB
    assert answer["content"].endswith("the very last line\n")
    assert answer["content"].startswith("filler line ")  # from the start of a line
    full = client.get(API.format(run="big") + "?full_content=true", headers=auth)
    assert full.status_code == 200 and full.mimetype == "text/plain" and full.is_streamed
    assert _sha256(full.response) == (whole, size)
    bad = client.get(API.format(run="big") + "?full_content=maybe", headers=auth)
    assert bad.status_code == 400

    # A small log is shown whole, without the note.
    _run(home, "small")
    small = client.get(PAGE.format(run="small")).text
    assert "hello-from-the-task" in small and 'id="log-truncated"' not in small
    answer = check(client.get(API.format(run="small"), headers=auth))
    assert answer["truncated"] is False and "hello-from-the-task" in answer["content"]
    check(client.get(API.format(run="small") + "?full_content=true", headers=auth))  # text/plain


def test_the_tail_size_is_configurable(sqlite_home, sqlite_web):
    path = _run(sqlite_home, "tiny")
    _grow(path, 200_000)
    sqlite_home.configure(webserver={"log_tail_bytes": "4096"})
    answer = check(
        sqlite_web.client().get(API.format(run="tiny"), headers=sqlite_web.api("viewer"))
    )
    assert answer["truncated"] is True and len(answer["content"]) <= 4096
    assert answer["content"].endswith("the very last line\n")


@pytest.mark.parametrize(
    ("kind", "reason"),
    [
        ("dev-full", "outside the log folder"),
        ("inside-link", "is a symlink; logs are never followed"),
        ("fifo", "not a regular file"),
    ],
)
def test_a_log_that_is_not_a_plain_file_is_refused_not_read(sqlite_home, sqlite_web, kind, reason):
    path = _run(sqlite_home, "odd")
    other = _run(sqlite_home, "other")
    path.unlink()
    if kind == "dev-full":
        path.symlink_to("/dev/full")
    elif kind == "inside-link":
        path.symlink_to(other)
    else:
        os.mkfifo(path)
    client = sqlite_web.client("viewer")
    started = time.monotonic()
    page = client.get(PAGE.format(run="odd")).text
    assert 'id="log-unavailable"' in page and reason in page
    answer = client.get(API.format(run="odd"), headers=sqlite_web.api("viewer"))
    assert answer.status_code == 404 and reason in check(answer)["detail"]
    download = client.get(PAGE.format(run="odd") + "/log?try=1")
    assert download.status_code == 404 and reason in download.text
    assert time.monotonic() - started < 30  # nothing blocked on the FIFO or read /dev/full


def _worker_pids(master: int) -> list[int]:
    children = Path(f"/proc/{master}/task/{master}/children").read_text().split()
    return [int(pid) for pid in children]


def _peak_rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmHWM for {pid}")


def test_gunicorn_streams_a_64_mib_log_without_holding_it(sqlite_home):
    """Through the real server: the worker's peak memory barely moves while 64 MiB go by."""
    from flowsched.web.server import start_in_background

    path = _run(sqlite_home, "huge")
    whole = _grow(path, 64 * MiB)
    size = path.stat().st_size
    link = _run(sqlite_home, "linked")
    link.unlink()
    link.symlink_to("/dev/zero")
    create_user("reader", "reader-password-1", "viewer")
    headers = {"Authorization": f"Bearer {create_token('reader', 'tests')}"}
    port = free_port()
    server = start_in_background(f"127.0.0.1:{port}", workers=1)
    base = f"http://127.0.0.1:{port}/api/v1/dags/logged/runs"
    try:
        wait_for_port(port, timeout=60, proc=server.process)
        request = urllib.request.Request(f"{base}/huge/tasks/say/tries/1/log", headers=headers)
        with urllib.request.urlopen(request, timeout=60) as response:
            tail = response.read(2 * MiB)
        # 1 MiB of log, and a JSON escape for each newline in it
        assert len(tail) < MiB * 1.1 and b'"truncated":true' in tail
        [worker] = _worker_pids(server.process.pid)
        before = _peak_rss_kib(worker)

        request = urllib.request.Request(
            f"{base}/huge/tasks/say/tries/1/log?full_content=true", headers=headers
        )
        with urllib.request.urlopen(request, timeout=120) as response:
            assert response.headers["Content-Length"] == str(size)
            assert _sha256(iter(lambda: response.read(MiB), b"")) == (whole, size)
        grown_kib = _peak_rss_kib(worker) - before
        print(f"gunicorn worker peak RSS {before} KiB, +{grown_kib} KiB for a {size} B download")
        assert grown_kib < 16 * 1024, f"the worker's peak grew by {grown_kib} KiB"

        request = urllib.request.Request(f"{base}/linked/tasks/say/tries/1/log", headers=headers)
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(request, timeout=30)
        assert refused.value.code == 404
        assert b"outside the log folder" in refused.value.read(10_000)
        assert _peak_rss_kib(worker) - before < 16 * 1024
    finally:
        server.stop()


def test_the_browser_shows_the_tail_downloads_the_whole_and_refuses_bad_run_ids(
    sqlite_home, browser
):
    path = _run(sqlite_home, "browsed")
    whole = _grow(path, 3 * MiB)
    create_user("alice", PASSWORD, "op")
    stack = Stack(sqlite_home)
    try:
        base = stack.webserver()
        page = new_page(browser)
        log_in(page, base, "alice")
        page.goto(f"{base}{PAGE.format(run='browsed')}")
        expect(page.locator("#log-truncated")).to_contain_text("Log truncated")
        expect(page.locator("pre.log")).to_contain_text("the very last line")
        shot(page, "sqlite-log-truncated")
        with page.expect_download() as info:
            page.click("#log-truncated a")
        saved = Path(info.value.path())
        with saved.open("rb") as source:
            assert _sha256(iter(lambda: source.read(MiB), b"")) == (whole, path.stat().st_size)
        # The trigger form refuses a run id that would leave the log folder, and says why.
        page.goto(f"{base}/dags/logged/trigger")
        page.fill("input[name=run_id]", "a/../../../../elsewhere")
        page.click("#trigger-form button[type=submit]")
        expect(page.locator("#trigger-error")).to_contain_text(
            "invalid run_id 'a/../../../../elsewhere': it has '/'"
        )
        expect(page.locator("input[name=run_id]")).to_have_value("a/../../../../elsewhere")
        page.close()
    finally:
        assert stack.stop().get("webserver") == 0
