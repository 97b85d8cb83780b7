"""``flowsched worker`` refuses to start when it should, and says what to do instead."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys

from tests.distributed.conftest import Cluster
from tests.servers import free_port


def _as_root(argv: list[str]) -> list[str]:
    """Run ``argv`` with uid 0: directly when the suite runs as root, else in a user namespace."""
    if os.geteuid() == 0:
        return argv
    unshare = shutil.which("unshare")
    assert unshare, "needs root or util-linux's unshare to test the root refusal"
    return [unshare, "--map-root-user", *argv]


def test_the_worker_refuses_root_and_names_the_service_user(cluster: Cluster) -> None:
    env = {key: value for key, value in cluster.cli_env().items() if key != "C_FORCE_ROOT"}
    result = subprocess.run(
        _as_root([sys.executable, "-m", "flowsched", "worker", "--nodename", "root@127.0.0.50"]),
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert result.returncode == 1
    assert "refusing to run the worker as root" in result.stderr
    assert "run it as the service user" in result.stderr
    assert "--allow-root" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_taken_log_server_port_stops_the_start_with_the_key_to_change(cluster: Cluster) -> None:
    port = free_port()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", port))
        taken.listen()
        result = subprocess.run(
            [sys.executable, "-m", "flowsched", "worker", "--allow-root", "-n", "x@127.0.0.1"],
            capture_output=True,
            text=True,
            env={
                **cluster.cli_env(),
                "FLOWSCHED__WORKER__LOG_SERVER_HOST": "127.0.0.1",
                "FLOWSCHED__WORKER__LOG_SERVER_PORT": str(port),
            },
            timeout=60,
        )
    assert result.returncode == 1
    assert f"log server cannot listen on 127.0.0.1:{port}" in result.stderr
    assert "[worker] log_server_host/port" in result.stderr
    assert "Address already in use" in result.stderr
