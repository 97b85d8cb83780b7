"""Serving: gunicorn through start_in_background, --debug, the schema check, standalone's admin."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import urllib.request

from flowsched.web.server import ensure_standalone_admin, start_in_background
from flowsched.web.users import authenticate
from tests.servers import free_port, wait_for_port


def _get(url: str) -> tuple[int, str]:
    with urllib.request.urlopen(url, timeout=10) as response:
        return response.status, response.read().decode()


def test_background_server_serves_and_stops_cleanly(sqlite_home):
    port = free_port()
    server = start_in_background(f"127.0.0.1:{port}", workers=1)
    try:
        wait_for_port(port, timeout=60, proc=server.process)
        status, body = _get(f"http://127.0.0.1:{port}/api/v1/health")
        assert status == 200 and '"metadatabase":"healthy"' in body
        status, body = _get(f"http://127.0.0.1:{port}/login")
        assert "Log in" in body and "flowsched.css" in body
        status, css = _get(f"http://127.0.0.1:{port}/static/flowsched.css")
        assert "--s-success" in css  # assets come from the package, not a CDN
    finally:
        server.stop()
    assert server.process.returncode == 0  # SIGTERM: gunicorn finished and exited cleanly


def test_debug_server(sqlite_home):
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "flowsched", "webserver", "--debug", "--bind", f"127.0.0.1:{port}"],
        env={**os.environ, **sqlite_home.env},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_port(port, timeout=60, proc=process)
        assert "Log in" in _get(f"http://127.0.0.1:{port}/login")[1]
    finally:
        process.terminate()
        process.wait(30)


def test_webserver_refuses_a_schema_that_needs_upgrading(tmp_path):
    env = {
        **os.environ,
        "FLOWSCHED_HOME": str(tmp_path),
        "FLOWSCHED__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{tmp_path / 'empty.db'}",
    }
    result = subprocess.run(
        [sys.executable, "-m", "flowsched", "webserver", "--bind", f"127.0.0.1:{free_port()}"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    assert "run `flowsched db upgrade` first" in result.stderr


def test_standalone_admin_is_created_once(sqlite_home):
    created = ensure_standalone_admin(sqlite_home.root)
    assert created is not None
    username, path = created
    password = path.read_text().strip()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert authenticate(username, password).role.value == "admin"
    assert ensure_standalone_admin(sqlite_home.root) is None  # users exist: nothing to do
