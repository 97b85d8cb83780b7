"""End to end in headless Chromium: real ``flowsched scheduler``, ``worker`` and ``webserver``.

An operator logs in, triggers a DAG and watches it turn green, reads a task's
log, clears a failed task and watches it re-run, deletes a DAG; with Celery,
the workers page lists the live worker and a log is fetched from it. Each
main page is saved as a screenshot under ``tests/artifacts/``.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright

from flowsched.web.users import create_user
from tests.conftest import Home
from tests.servers import free_port, wait_for_port

ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"
PASSWORD = "operator-password"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
UI_TIMEOUT_MS = 60_000

JOURNEY = """
from datetime import datetime
from flowsched import DAG, BashOperator

with DAG("journey", schedule=None, start_date=datetime(2026, 1, 1), tags=["e2e"],
         description="Three steps in a row") as dag:
    steps = [BashOperator(task_id=f"step_{n}", bash_command=f"echo journey step {n}")
             for n in range(1, 4)]
    steps[0] >> steps[1] >> steps[2]
"""

FLAKY = """
from datetime import datetime
from flowsched import DAG, BashOperator

MARKER = {marker!r}

with DAG("flaky", schedule=None, start_date=datetime(2026, 1, 1), tags=["e2e"]) as dag:
    first = BashOperator(task_id="first", bash_command="echo first")
    fragile = BashOperator(
        task_id="fragile",
        bash_command=f"if [ -e {{MARKER}} ]; then echo recovered; else touch {{MARKER}}; "
                     "echo failing on purpose; exit 3; fi",
    )
    after = BashOperator(task_id="after", bash_command="echo after")
    first >> fragile >> after
"""

DOOMED = """
from datetime import datetime
from flowsched import DAG, BashOperator

with DAG("doomed", schedule=None, start_date=datetime(2026, 1, 1)) as dag:
    BashOperator(task_id="noop", bash_command="true")
"""


class Stack:
    """Component processes of one test, each logging to a file; stopped with SIGTERM."""

    def __init__(self, home: Home) -> None:
        self.home = home
        self.procs: dict[str, tuple[subprocess.Popen[bytes], Path]] = {}

    def start(self, name: str, *args: str, env: dict[str, str] | None = None) -> None:
        output = self.home.root / f"{name}.out"
        with output.open("wb") as sink:
            process = subprocess.Popen(
                [sys.executable, "-m", "flowsched", *args],
                env={**os.environ, **self.home.env, **(env or {})},
                stdout=sink,
                stderr=subprocess.STDOUT,
            )
        self.procs[name] = (process, output)

    def webserver(self) -> str:
        port = free_port()
        self.start("webserver", "webserver", "--bind", f"127.0.0.1:{port}", "--workers", "1")
        wait_for_port(port, timeout=60, proc=self.procs["webserver"][0])
        return f"http://127.0.0.1:{port}"

    def output(self, name: str) -> str:
        return self.procs[name][1].read_text(errors="replace")

    def stop(self) -> dict[str, int]:
        for process, _ in self.procs.values():
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        codes = {}
        for name, (process, _) in self.procs.items():
            try:
                codes[name] = process.wait(60)
            except subprocess.TimeoutExpired:
                process.kill()
                codes[name] = process.wait()
        return codes


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS
        )
        yield chromium
        chromium.close()


@pytest.fixture
def stack(home: Home) -> Iterator[Stack]:
    running = Stack(home)
    yield running
    codes = running.stop()
    assert codes.get("webserver", 0) == 0, running.output("webserver")[-3000:]


def shot(page: Page, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def new_page(browser: Browser) -> Page:
    page = browser.new_page(viewport={"width": 1440, "height": 900})
    page.set_default_timeout(UI_TIMEOUT_MS)
    page.on("dialog", lambda dialog: dialog.accept())  # the confirm() of clear and mark
    return page


def log_in(page: Page, base: str, username: str) -> None:
    page.goto(f"{base}/dags")
    expect(page).to_have_url(re.compile(r"/login\?next="))
    page.fill("input[name=username]", username)
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]")
    expect(page).to_have_url(f"{base}/dags")


def wait_for_dags(page: Page, base: str, *dag_ids: str) -> None:
    """The scheduler's DAG processor parses the folder at start; reload until they show."""
    for _ in range(60):
        page.goto(f"{base}/dags")
        if all(page.locator(f'tr[data-dag-id="{d}"]').count() for d in dag_ids):
            return
        page.wait_for_timeout(500)
    raise AssertionError(f"DAGs {dag_ids} never appeared on the DAGs page")


def trigger_from_dag_page(page: Page, base: str, dag_id: str, conf: str = "") -> None:
    page.goto(f"{base}/dags/{dag_id}")
    page.click("text=Trigger")
    page.fill("textarea[name=conf]", conf)
    page.click("#trigger-form button[type=submit]")
    expect(page.locator(".flash.success")).to_contain_text("Triggered run")


def test_operator_journey(browser, stack, home, request):
    backend = request.node.callspec.params["home"]
    marker = home.root / "fragile.marker"
    home.write_dag("journey.py", JOURNEY)
    home.write_dag("flaky.py", FLAKY.format(marker=str(marker)))
    home.write_dag("doomed.py", DOOMED)
    create_user("alice", PASSWORD, "admin")
    stack.start("scheduler", "scheduler")
    base = stack.webserver()
    page = new_page(browser)

    page.goto(f"{base}/login")
    shot(page, f"{backend}-login")
    log_in(page, base, "alice")
    wait_for_dags(page, base, "journey", "flaky", "doomed")
    expect(page.locator("body")).to_contain_text("+08:00")
    shot(page, f"{backend}-dags")

    # a malformed conf is refused with the parser's message
    page.goto(f"{base}/dags/journey/trigger")
    page.fill("textarea[name=conf]", '{"day": 2026-11-24}')
    page.click("#trigger-form button[type=submit]")
    expect(page.locator("#trigger-error")).to_contain_text("conf is not valid JSON")

    # trigger, and watch the grid turn green without reloading (live refresh)
    trigger_from_dag_page(page, base, "journey", '{"day": "2026-11-24"}')
    expect(page.locator("#grid a.cell.s-success")).to_have_count(3)
    expect(page.locator("#grid a.runbar.s-success")).to_have_count(1)
    shot(page, f"{backend}-grid")
    page.click("text=Graph")
    expect(page.locator("svg.graph g.node.s-success")).to_have_count(3)
    shot(page, f"{backend}-graph")
    page.click("text=Code")
    expect(page.locator("#source")).to_contain_text("journey step")
    shot(page, f"{backend}-code")

    # a task's log, fetched for the try that ran it
    page.click("text=Grid")
    page.locator('#grid a.cell[href$="/tasks/step_2"]').click()
    expect(page.locator("pre.log")).to_contain_text("journey step 2")
    expect(page.locator("#tries")).to_contain_text("try 1")
    shot(page, f"{backend}-task")

    # a failure: clear it from the run page and watch the run recover
    trigger_from_dag_page(page, base, "flaky")
    expect(page.locator("#grid a.cell.s-upstream_failed")).to_have_count(1)
    expect(page.locator("#grid a.cell.s-failed")).to_have_count(1)
    page.locator("#grid a.runbar").first.click()
    expect(page.locator("#task-instances")).to_contain_text("upstream failed")
    shot(page, f"{backend}-run-failed")
    page.click("text=Clear failed tasks (with downstream)")
    expect(page.locator(".flash.success")).to_contain_text("Cleared 2 task instance(s)")
    expect(page.locator("#task-instances .badge.s-success")).to_have_count(3)
    page.click('#task-instances a:text-is("fragile")')
    expect(page.locator("#tries tbody tr")).to_have_count(2)
    expect(page.locator("pre.log")).to_contain_text("recovered")
    page.click("text=try 1")
    expect(page.locator("pre.log")).to_contain_text("failing on purpose")
    shot(page, f"{backend}-task-retried")

    # delete a DAG (its file first, or the next parse brings it back)
    (home.dags / "doomed.py").unlink()
    page.goto(f"{base}/dags/doomed")
    page.click("text=Delete")
    page.fill("input[name=confirm]", "doomed")
    shot(page, f"{backend}-delete")
    page.click("#delete-form button.danger")
    expect(page).to_have_url(f"{base}/dags")
    expect(page.locator(".flash.success")).to_contain_text("Deleted DAG doomed")
    expect(page.locator('tr[data-dag-id="doomed"]')).to_have_count(0)
    expect(page.locator('tr[data-dag-id="flaky"] a.count.s-success')).to_have_text("1")
    shot(page, f"{backend}-dags-after")

    page.goto(f"{base}/workers")
    expect(page.locator("#workers-message")).to_contain_text("Not using Celery")
    page.goto(f"{base}/api-docs")
    shot(page, f"{backend}-api-docs")
    page.close()


REMOTE = """
from datetime import datetime
from flowsched import DAG, BashOperator

with DAG("remote", schedule=None, start_date=datetime(2026, 1, 1)) as dag:
    BashOperator(task_id="where", bash_command="echo ran on $(hostname) for the web test")
"""


def test_celery_workers_and_remote_logs(browser, mysql_home, redis_server):
    home = mysql_home
    home.configure(
        core={"executor": "celery", "secret_key": "e2e-test-secret-2b8f4d6a0c9e1f3a5b7d9c1e"},
        celery={"broker_url": redis_server.url},
        worker={"log_server_port": str(free_port())},
        webserver={"flower_url": "http://flower.example:5555"},
    )
    home.write_dag("remote.py", REMOTE)
    create_user("olga", PASSWORD, "op")
    stack = Stack(home)
    try:
        worker_logs = home.root / "worker-logs"
        stack.start(
            "worker",
            *("worker", "--nodename", "web-a@127.0.0.2", "-c", "1", "--allow-root"),
            env={
                "FLOWSCHED_HOSTNAME": "127.0.0.2",
                "FLOWSCHED__LOGGING__BASE_LOG_FOLDER": str(worker_logs),
                "FLOWSCHED__WORKER__LOG_SERVER_HOST": "127.0.0.2",
            },
        )
        stack.start("scheduler", "scheduler")
        base = stack.webserver()
        page = new_page(browser)
        log_in(page, base, "olga")
        for _ in range(60):
            page.goto(f"{base}/workers")
            if page.locator("#workers").count():
                break
            page.wait_for_timeout(500)
        expect(page.locator("#workers")).to_contain_text("web-a@127.0.0.2")
        expect(page.locator("a:text('Open Flower')")).to_have_attribute(
            "href", "http://flower.example:5555"
        )
        shot(page, "celery-workers")
        page.goto(f"{base}/cluster_activity")
        slots = page.locator('#worker-slots tr[data-worker="web-a@127.0.0.2"]')
        expect(slots).to_contain_text("0/1")  # -c 1: one slot, idle
        expect(slots.locator("svg.meter")).to_have_attribute(
            "aria-label", "web-a@127.0.0.2: 0 of 1 slots busy"
        )

        wait_for_dags(page, base, "remote")
        trigger_from_dag_page(page, base, "remote")
        expect(page.locator("#grid a.cell.s-success")).to_have_count(1)
        page.locator("#grid a.cell").first.click()
        # the webserver's own log folder is empty: this text came from the worker's log server
        expect(page.locator("pre.log")).to_contain_text("for the web test")
        expect(page.locator("#tries")).to_contain_text("web-a@127.0.0.2")
        assert not any((home.logs).rglob("*.log"))
        shot(page, "celery-task-remote-log")

        process, _ = stack.procs["worker"]
        process.send_signal(signal.SIGTERM)
        process.wait(60)
        page.reload()
        expect(page.locator("#log-unavailable")).to_contain_text(
            "cannot reach the log server of 127.0.0.2"
        )
        page.goto(f"{base}/workers")
        expect(page.locator("#workers-message")).to_contain_text("No Celery worker answered")
        page.close()
    finally:
        codes = stack.stop()
    assert codes["webserver"] == 0, stack.output("webserver")[-3000:]
