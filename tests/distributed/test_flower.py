"""``flowsched flower`` is the real Flower, on the cluster's broker, behind basic auth."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

from tests.conftest import wait_until
from tests.distributed.conftest import Cluster
from tests.servers import free_port


def _get(url: str, auth: str | None = None) -> tuple[int, bytes]:
    headers = {"Authorization": "Basic " + base64.b64encode(auth.encode()).decode()} if auth else {}
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=10) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def _start_refused(env: dict[str, str]) -> str:
    """Run `flowsched flower`, which must refuse to start; its stderr."""
    result = subprocess.run(
        [sys.executable, "-m", "flowsched", "flower"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert result.returncode == 1, result.stderr
    return result.stderr


def test_flower_needs_a_password_and_shows_the_clusters_workers(cluster: Cluster) -> None:
    port = free_port()
    env = {
        **cluster.cli_env(),
        "FLOWSCHED__FLOWER__PORT": str(port),
        "FLOWSCHED__FLOWER__HOST": "127.0.0.1",
    }
    refused = _start_refused(env)
    assert "[flower] basic_auth must be set to user:password" in refused

    env["FLOWSCHED__FLOWER__BASIC_AUTH"] = "admin:flower-pass"
    refused = _start_refused(env)
    assert "[flower] basic_auth: the password is too weak" in refused
    assert "flower-pass" not in refused

    env["FLOWSCHED__FLOWER__BASIC_AUTH"] = "admin:flower-test-pass-8d2f"
    output = cluster.root / "output" / "flower.log"
    with output.open("wb") as sink:
        flower = subprocess.Popen(
            [sys.executable, "-m", "flowsched", "flower"],
            env=env,
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
    try:
        base = f"http://127.0.0.1:{port}"

        def up() -> bool:
            assert flower.poll() is None, output.read_text()
            try:
                return _get(f"{base}/healthcheck")[0] in (200, 401)
            except OSError:
                return False

        wait_until(up, timeout=60, step=0.3)
        # [flower] host: it listens on that address only, not 0.0.0.0.
        listening = subprocess.run(
            ["ss", "-Htln", f"sport = :{port}"], capture_output=True, text=True, timeout=30
        ).stdout.split()
        assert f"127.0.0.1:{port}" in listening and f"0.0.0.0:{port}" not in listening, listening
        assert _get(f"{base}/")[0] == 401
        assert _get(f"{base}/", "admin:wrong")[0] == 401
        status, _ = _get(f"{base}/", "admin:flower-test-pass-8d2f")
        assert status == 200

        def lists_workers() -> bool:
            status, body = _get(f"{base}/api/workers?refresh=1", "admin:flower-test-pass-8d2f")
            return status == 200 and {cluster.a.nodename, cluster.b.nodename} <= set(
                json.loads(body)
            )

        wait_until(lists_workers, timeout=30, step=1.0)
        # The password is not on the command line, where `ps` would show it.
        cmdline = Path(f"/proc/{flower.pid}/cmdline").read_bytes()
        assert b"flower-test-pass-8d2f" not in cmdline
        assert b"flowsched.celery.app" in cmdline
    finally:
        flower.terminate()
        flower.wait(30)
