"""The chart pages and the dark theme in headless Chromium, on a real gunicorn server.

Real runs (tests/web/chart_data.py) on SQLite; a Viewer looks at every chart
in the light and the dark colour scheme. Screenshots of each page in each
scheme go to the test's tmp dir (``<scheme>-<page>.png``).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, Page, expect

from flowsched.crypto import generate_key
from flowsched.operations import set_pool
from flowsched.web.server import start_in_background
from tests.servers import free_port, wait_for_port
from tests.web import test_e2e
from tests.web.chart_data import Charted, seed_charted
from tests.web.conftest import ROLES
from tests.web.live import STRONG_SECRET

# The module-scoped Chromium of the end-to-end tests, shared rather than repeated.
browser = test_e2e.browser
UI_TIMEOUT_MS = 30_000
# --bg and --s-failed of flowsched.css (light) and dark.css (dark), as computed colours.
BACKGROUND = {"light": "rgb(245, 246, 248)", "dark": "rgb(16, 20, 27)"}
FAILED = {"light": "rgb(217, 56, 72)", "dark": "rgb(240, 80, 95)"}
SUCCESS = {"light": "rgb(30, 158, 87)", "dark": "rgb(47, 191, 111)"}

# Every visible surface (an element bigger than a badge, outside the always-dark top
# bar) whose own background, or fill for SVG shapes, is light: in the dark theme, none.
LIGHT_SURFACES_JS = """
() => {
  const light = [];
  const lum = (text) => {
    const m = text.match(/rgba?\\(([^)]+)\\)/);
    if (!m) return 0;
    const p = m[1].split(',').map(Number);
    if (p.length === 4 && p[3] < 0.5) return 0;
    return (0.2126 * p[0] + 0.7152 * p[1] + 0.0722 * p[2]) / 255;
  };
  for (const el of document.querySelectorAll('body *')) {
    const style = getComputedStyle(el);
    if (style.display === 'none' || style.visibility === 'hidden') continue;
    if (el.closest('details:not([open]) > :not(summary)') || el.closest('.topbar')) continue;
    const box = el.getBoundingClientRect();
    if (box.width * box.height < 1200) continue;
    const shape = el instanceof SVGGeometryElement && !(el instanceof SVGTextElement);
    const value = shape ? lum(style.fill) : lum(style.backgroundColor);
    if (value > (shape ? 0.85 : 0.6)) {
      const colour = shape ? style.fill : style.backgroundColor;
      light.push(`${el.tagName}.${el.getAttribute('class')} ${colour}`);
    }
  }
  return light.slice(0, 12);
}
"""


@pytest.fixture
def chart_server(sqlite_home) -> Iterator[tuple[str, Charted]]:
    from flowsched.web.users import create_user

    sqlite_home.configure(core={"secret_key": STRONG_SECRET, "fernet_key": generate_key()})
    for role in ROLES:
        create_user(role, test_e2e.PASSWORD, role)
    runs = seed_charted(sqlite_home)
    port = free_port()
    server = start_in_background(f"127.0.0.1:{port}", workers=1)
    try:
        wait_for_port(port, timeout=60, proc=server.process)
        yield f"http://127.0.0.1:{port}", runs
    finally:
        server.stop()


def open_as(browser: Browser, base: str, scheme: str, username: str = "viewer") -> Page:
    page = browser.new_page(viewport={"width": 1440, "height": 900}, color_scheme=scheme)
    page.set_default_timeout(UI_TIMEOUT_MS)
    test_e2e.log_in(page, base, username)
    return page


def fill_of(page: Page, selector: str) -> Any:
    return page.locator(selector).evaluate("el => getComputedStyle(el).fill")


def check_theme(page: Page, scheme: str, shots: Path, name: str) -> None:
    background = page.evaluate("() => getComputedStyle(document.body).backgroundColor")
    assert background == BACKGROUND[scheme], f"{name}: body is {background} in {scheme}"
    if scheme == "dark":
        assert page.evaluate(LIGHT_SURFACES_JS) == [], f"{name}: light surfaces in the dark theme"
    page.screenshot(path=str(shots / f"{scheme}-{name}.png"), full_page=True)


@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_charts_draw_the_tries_and_days(browser, chart_server, tmp_path, scheme):
    base, runs = chart_server
    page = open_as(browser, base, scheme)

    # the run page links to its Gantt chart: a bar per try, two for the retried task
    page.goto(f"{base}/dags/charted/runs/{runs.bad_run}")
    page.click("#gantt-link")
    expect(page.locator("#gantt g.try")).to_have_count(4)
    flaky = page.locator('#gantt g.try[data-task-id="flaky"]')
    expect(flaky).to_have_count(2)
    expect(flaky.first).to_have_attribute("data-state", "failed")
    expect(flaky.nth(1)).to_have_attribute("data-state", "success")
    expect(flaky.first.locator("title")).to_contain_text("flaky, try 1: failed; queued ")
    expect(flaky.first.locator("rect.wait")).to_have_count(1)
    assert (
        fill_of(page, '#gantt g.try[data-task-id="flaky"] >> nth=0 >> rect.bar') == FAILED[scheme]
    )
    assert (
        fill_of(page, '#gantt g.try[data-task-id="flaky"] >> nth=1 >> rect.bar') == SUCCESS[scheme]
    )
    check_theme(page, scheme, tmp_path, "gantt")

    # task duration over both runs, from the DAG's tabs: 3 tasks x 2 runs + 1 retry
    page.click("nav.tabs >> text=Task duration")
    expect(page.locator("#durations rect.bar")).to_have_count(7)
    expect(page.locator('#durations rect.bar[data-task-id="flaky"]')).to_have_count(3)
    bad_flaky = page.locator(
        f'#durations rect.bar[data-task-id="flaky"][data-run-id="{runs.bad_run}"]'
    )
    expect(bad_flaky).to_have_count(2)
    check_theme(page, scheme, tmp_path, "duration")
    page.select_option("select[name=num_runs]", "5")
    expect(page).to_have_url(f"{base}/dags/charted/duration?num_runs=5")

    page.click("nav.tabs >> text=Landing times")
    expect(page.locator("#landing rect.bar")).to_have_count(6)
    expect(page.locator('#landing rect.bar[data-task-id="last"] >> title').first).to_contain_text(
        "after the data interval ended"
    )
    check_theme(page, scheme, tmp_path, "landing-times")

    # the calendar: the failed run's day is red, today's green, other days empty
    page.click("nav.tabs >> text=Calendar")
    bad_day = f'#calendar rect.day[data-date="{runs.bad_day.isoformat()}"]'
    expect(page.locator(bad_day)).to_have_attribute("data-state", "failed")
    assert fill_of(page, bad_day) == FAILED[scheme]
    good_day = f'#calendar rect.day[data-date="{runs.good_day.isoformat()}"]'
    assert fill_of(page, good_day) == SUCCESS[scheme]
    expect(page.locator(f"{bad_day} >> title")).to_contain_text("1 run(s): 1 failed")
    expect(page.locator("#calendar rect.day.s-none").first).to_have_attribute("data-runs", "0")
    check_theme(page, scheme, tmp_path, "calendar")
    page.close()


def test_cluster_page_refreshes_itself(browser, chart_server, tmp_path):
    base, _ = chart_server
    page = open_as(browser, base, "light")
    page.click("nav >> text=Cluster")
    expect(page.locator('#pools tr[data-pool="default_pool"]')).to_contain_text("default_pool")
    expect(page.locator("#queues-empty")).to_be_visible()
    check_theme(page, "light", tmp_path, "cluster")
    set_pool("reports", 4, "added while the page is open")
    # no reload: the live region fetches the page again every few seconds
    expect(page.locator('#pools tr[data-pool="reports"]')).to_contain_text("4", timeout=30_000)
    page.close()
    dark = open_as(browser, base, "dark")
    dark.goto(f"{base}/cluster_activity")
    expect(dark.locator('#pools tr[data-pool="reports"]')).to_have_count(1)
    check_theme(dark, "dark", tmp_path, "cluster")
    dark.close()


def test_dark_theme_covers_every_page(browser, chart_server, tmp_path):
    base, runs = chart_server
    login = browser.new_page(color_scheme="dark")
    login.goto(f"{base}/login")
    check_theme(login, "dark", tmp_path, "login")
    login.close()
    page = open_as(browser, base, "dark", username="admin")
    pages = {
        "dags": "/dags",
        "grid": "/dags/charted",
        "graph": "/dags/charted/graph",
        "code": "/dags/charted/code",
        "runs": "/dags/charted/runs",
        "run": f"/dags/charted/runs/{runs.bad_run}",
        "task": f"/dags/charted/runs/{runs.bad_run}/tasks/flaky",
        "trigger": "/dags/charted/trigger",
        "workers": "/workers",
        "connections": "/connections",
        "variables": "/variables",
        "api-docs": "/api-docs",
        "tokens": "/tokens",
        "audit": "/audit",
        "not-found": "/dags/nope",
    }
    for name, path in pages.items():
        page.goto(base + path)
        check_theme(page, "dark", tmp_path, name)
    page.close()
