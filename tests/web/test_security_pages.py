"""The audit log and API token pages in headless Chromium, against a real gunicorn server."""

from __future__ import annotations

import re

from playwright.sync_api import Browser, Page, expect

from flowsched.dag_processor import process_folder
from tests.web import test_e2e
from tests.web.conftest import OTHER, PASSWORD
from tests.web.live import Live

UI_TIMEOUT_MS = 30_000


# The module-scoped Chromium of the end-to-end tests, shared rather than repeated.
browser = test_e2e.browser


def open_page(browser: Browser, live: Live, username: str, password: str = PASSWORD) -> Page:
    page = browser.new_page(viewport={"width": 1440, "height": 900})
    page.set_default_timeout(UI_TIMEOUT_MS)
    page.goto(f"http://127.0.0.1:{live.port}/login")
    page.fill("input[name=username]", username)
    page.fill("input[name=password]", password)
    page.click("button[type=submit]")
    return page


def test_the_audit_log_page_filters_and_pages_events(browser: Browser, live: Live, home):
    home.write_dag("other.py", OTHER)
    assert not process_folder().errors
    base = f"http://127.0.0.1:{live.port}"
    wrong = open_page(browser, live, "op", "not-the-password")
    expect(wrong.locator(".flash.error")).to_contain_text("Wrong username or password")
    wrong.close()
    for n in range(3):
        reply = live.api("POST", "/dags/other_dag/runs", live.tokens["op"], {"conf": {"n": n}})
        assert reply.status == 201

    page = open_page(browser, live, "admin")
    expect(page).to_have_url(f"{base}/dags")
    page.click("nav >> text=Audit log")
    expect(page).to_have_url(f"{base}/audit")
    failed = page.locator("#audit tr.event-login_failed")
    expect(failed).to_have_count(1)
    expect(failed).to_contain_text("op")
    expect(failed).to_contain_text("127.0.0.1")

    page.select_option("select[name=event]", "trigger")
    page.fill("input[name=user]", "op")
    page.click("#audit-filter button[type=submit]")
    expect(page).to_have_url(re.compile(r"/audit\?user=op&dag_id=&event=trigger"))
    expect(page.locator("#audit tbody tr")).to_have_count(3)
    expect(page.locator("#audit tr.event-login_failed")).to_have_count(0)

    page.goto(f"{base}/audit?event=trigger&size=2")
    expect(page.locator("#audit tbody tr")).to_have_count(2)
    page.click("a[rel=next]")
    expect(page.locator("#audit tbody tr")).to_have_count(1)
    expect(page.locator("#audit tbody tr")).to_contain_text('"n": 0')  # the oldest, last

    viewer = open_page(browser, live, "viewer")
    expect(viewer.locator("nav >> text=Audit log")).to_have_count(0)
    assert viewer.goto(f"{base}/audit").status == 403


def test_tokens_page_creates_shows_once_and_revokes(browser: Browser, live: Live) -> None:
    base = f"http://127.0.0.1:{live.port}"
    page = open_page(browser, live, "viewer")
    page.click("nav >> text=Tokens")
    expect(page).to_have_url(f"{base}/tokens")
    expect(page).to_have_title("API tokens and password · flowsched")
    expect(page.locator("#password-form input[type=password]")).to_have_count(3)
    page.fill("input[name=description]", "from-the-browser")
    page.fill("input[name=expires_in_days]", "7")
    page.click("#token-form button[type=submit]")
    token = page.locator("#new-token code").inner_text().strip()
    assert token.startswith("fst_")
    assert live.api("GET", "/dags", token).status == 200

    page.goto(f"{base}/tokens")
    assert token not in page.content()  # shown once only
    row = page.locator("#tokens tr", has_text="from-the-browser")
    expect(row).to_have_count(1)
    expect(row.locator(".last-used")).not_to_contain_text("never")
    expect(row).not_to_contain_text("expired")
    expect(page.locator("#tokens tbody tr")).to_have_count(2)  # the fixture's token too
    expect(page.locator("#tokens th", has_text="User")).to_have_count(0)  # only their own

    row.locator("button", has_text="Revoke").click()
    expect(page.locator(".flash.success")).to_contain_text("Revoked token")
    expect(page.locator("#tokens tr", has_text="from-the-browser")).to_have_count(0)
    assert live.api("GET", "/dags", token).status == 401
    assert live.api("GET", "/dags", live.tokens["viewer"]).status == 200

    bad = page.locator("input[name=expires_in_days]")
    bad.evaluate("input => input.removeAttribute('max')")
    bad.fill("99999")
    page.click("#token-form button[type=submit]")
    expect(page.locator("#token-error")).to_contain_text("use 1 to 3650 days")

    admin = open_page(browser, live, "admin")
    admin.goto(f"{base}/tokens")
    expect(admin.locator("#tokens tbody tr")).to_have_count(3)  # everyone's
