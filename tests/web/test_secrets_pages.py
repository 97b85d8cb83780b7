"""The Connections and Variables pages in headless Chromium, on a real ``flowsched webserver``."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from playwright.sync_api import Browser, expect

from flowsched import Connection, Variable
from flowsched.crypto import generate_key
from flowsched.secrets.metastore import add_connection
from flowsched.web.users import create_user
from tests.web.test_e2e import PASSWORD, Stack, browser, new_page, shot

__all__ = ["browser"]


@pytest.fixture
def server(sqlite_home) -> Iterator[str]:
    sqlite_home.configure(core={"fernet_key": generate_key()})
    for role in ("admin", "op", "viewer"):
        create_user(f"{role}-user", PASSWORD, role)
    stack = Stack(sqlite_home)
    try:
        yield stack.webserver()
    finally:
        codes = stack.stop()
    assert codes["webserver"] == 0, stack.output("webserver")[-3000:]


def _log_in(browser: Browser, base: str, username: str):
    page = new_page(browser)
    page.goto(f"{base}/login")
    page.fill("input[name=username]", username)
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]")
    expect(page).to_have_url(f"{base}/dags")
    return page


def test_admin_manages_connections(browser, server):
    base = server
    page = _log_in(browser, base, "admin-user")
    page.click("nav >> text=Connections")
    expect(page.locator(".empty")).to_contain_text("No connections")
    page.click("#add-connection")
    page.fill("input[name=conn_id]", "warehouse")
    page.fill("input[name=conn_type]", "mysql")
    page.fill("input[name=host]", "db.internal")
    page.fill("input[name=port]", "not-a-port")
    page.fill("input[name=login]", "etl")
    page.fill("input[name=password]", "Pw-from-browser")
    page.fill("textarea[name=extra]", '{"api_token": "tok-browser-1", "charset": "utf8mb4"}')
    page.click("#connection-form button[type=submit]")
    expect(page.locator("#form-error")).to_contain_text("port 'not-a-port' is not a number")
    expect(page.locator("input[name=password]")).to_have_value("")  # never sent back
    page.fill("input[name=port]", "3306")
    page.fill("input[name=password]", "Pw-from-browser")
    page.click("#connection-form button[type=submit]")
    expect(page.locator(".flash.success")).to_contain_text("Added connection warehouse")
    expect(page.locator('tr[data-conn-id="warehouse"]')).to_contain_text("db.internal")
    shot(page, "connections-list")

    page.click('tr[data-conn-id="warehouse"] >> text=Edit')
    expect(page.locator("input[name=password]")).to_have_value("")
    expect(page.locator("input[name=password]")).to_have_attribute(
        "placeholder", "set: leave empty to keep it"
    )
    extra = page.locator("textarea[name=extra]").input_value()
    assert '"api_token": "***"' in extra and "tok-browser-1" not in page.content()
    assert "Pw-from-browser" not in page.content()
    shot(page, "connection-edit")
    page.fill("input[name=host]", "db2.internal")
    page.click("#connection-form button[type=submit]")
    expect(page.locator(".flash.success")).to_contain_text("Saved connection warehouse")
    stored = Connection.get("warehouse")
    assert (stored.host, stored.password) == ("db2.internal", "Pw-from-browser")
    assert stored.extra_dejson["api_token"] == "tok-browser-1"

    page.click('tr[data-conn-id="warehouse"] >> text=Delete')  # confirm() accepted
    expect(page.locator(".flash.success")).to_contain_text("Deleted connection warehouse")
    expect(page.locator('tr[data-conn-id="warehouse"]')).to_have_count(0)
    page.close()


def test_op_edits_variables_and_viewer_sees_no_values(browser, server):
    base = server
    add_connection(Connection(conn_id="api", conn_type="http", host="api.example.com"))
    page = _log_in(browser, base, "op-user")
    page.goto(f"{base}/connections")
    expect(page.locator('tr[data-conn-id="api"]')).to_contain_text("api.example.com")
    expect(page.locator("#add-connection")).to_have_count(0)
    expect(page.locator('tr[data-conn-id="api"] >> text=Edit')).to_have_count(0)
    assert page.goto(f"{base}/connections/new").status == 403

    page.goto(f"{base}/variables")
    for key, value in (("environment", "production"), ("service_token", "tok-var-secret")):
        page.click("#add-variable")
        page.fill("input[name=key]", key)
        page.fill("textarea[name=value]", value)
        page.click("#variable-form button[type=submit]")
        expect(page.locator(".flash.success")).to_contain_text(f"Saved variable {key}")
    expect(page.locator('tr[data-key="environment"] .value')).to_have_text("production")
    expect(page.locator('tr[data-key="service_token"] .value')).to_have_text("***")
    assert "tok-var-secret" not in page.content()
    shot(page, "variables-op")
    page.click('tr[data-key="service_token"] >> text=Edit')
    expect(page.locator("textarea[name=value]")).to_have_value("")
    page.fill("input[name=description]", "for the API")
    page.click("#variable-form button[type=submit]")
    expect(page.locator('tr[data-key="service_token"]')).to_contain_text("for the API")
    assert Variable.get("service_token") == "tok-var-secret"  # left empty: kept
    page.click('tr[data-key="environment"] >> text=Edit')
    page.fill("textarea[name=value]", "staging")
    page.click("#variable-form button[type=submit]")
    expect(page.locator('tr[data-key="environment"] .value')).to_have_text("staging")
    page.click('tr[data-key="environment"] >> text=Delete')
    expect(page.locator(".flash.success")).to_contain_text("Deleted variable environment")
    page.close()

    viewer = _log_in(browser, base, "viewer-user")
    viewer.goto(f"{base}/variables")
    expect(viewer.locator('tr[data-key="service_token"] .value')).to_have_text("hidden")
    expect(viewer.locator("#add-variable")).to_have_count(0)
    viewer.goto(f"{base}/connections")
    expect(viewer.locator('tr[data-conn-id="api"]')).to_contain_text("http")
    assert "api.example.com" not in viewer.content()
    shot(viewer, "connections-viewer")
    assert viewer.goto(f"{base}/variables/new").status == 403
    viewer.close()
