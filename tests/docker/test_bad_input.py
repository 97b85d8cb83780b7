"""Bad input for the DockerOperator: each failure names what to fix, and is retried."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from flowsched import DAG, operations
from flowsched.config import set_config
from flowsched.db.engine import reset_engine
from flowsched.discovery import exec_dag_file
from flowsched.exceptions import DagDefinitionError
from flowsched.providers.docker import DEFAULT_DOCKER_HOST, DockerOperator, resolve_docker_host
from tests.conftest import _make_home
from tests.harness import drive, parse, run_finished, run_state, tries

REPO = Path(__file__).parents[2]

BAD = """
from datetime import datetime
from flowsched import DAG
from flowsched.providers.docker import DockerOperator

with DAG("{dag_id}", start_date=datetime(2026, 1, 1), schedule=None,
         default_args={{"retries": 1, "retry_delay": 0}}) as dag:
{tasks}
"""


def write(home, dag_id: str, **tasks: str) -> None:
    body = "\n".join(
        f'    DockerOperator(task_id="{task_id}", network_mode="none", command="true", {args})'
        for task_id, args in tasks.items()
    )
    home.write_dag(f"{dag_id}.py", BAD.format(dag_id=dag_id, tasks=body))


def run_to_the_end(home, dag_id: str, **tasks: str) -> None:
    write(home, dag_id, **tasks)
    parse()
    operations.trigger_dag(dag_id)
    drive(run_finished(dag_id), timeout=90)


def errors(dag_id: str, task_id: str) -> list[str]:
    history = tries(dag_id, task_id)
    assert [t.state for t in history] == ["failed", "failed"], history  # tried, retried
    return [t.error for t in history]


def test_missing_image_names_the_image(docker_home, podman):
    with contextlib.closing(podman.client()) as client:
        client.images.get(podman.image).tag("localhost:1/flowsched/present", "1")
    run_to_the_end(
        docker_home,
        "dock_image",
        never='image="localhost/flowsched/absent:1", pull_policy="never"',
        # Nothing listens on localhost:1, so the pull fails as with a registry that is down.
        pull='image="localhost:1/flowsched/absent:1", pull_policy="missing"',
        # Present, but "always" pulls anyway, from a registry that does not exist.
        always='image="localhost:1/flowsched/present:1", pull_policy="always"',
    )
    for error in errors("dock_image", "never"):
        assert (
            f"image localhost/flowsched/absent:1 is not on the Docker endpoint {podman.url} "
            "and pull_policy is 'never'" in error
        )
    for error in errors("dock_image", "pull"):
        assert f"cannot pull image localhost:1/flowsched/absent:1 through {podman.url}" in error
        assert "connection refused" in error  # the registry's error, not just "not found"
    for error in errors("dock_image", "always"):
        assert f"cannot pull image localhost:1/flowsched/present:1 through {podman.url}" in error
    assert podman.containers("dock_image") == []


def test_unreachable_endpoint_is_named_and_the_task_argument_wins(docker_home, podman):
    # FLOWSCHED_DOCKER_HOST points at the working Podman API; docker_conn overrides it.
    run_to_the_end(
        docker_home,
        "dock_endpoint",
        nosocket='image="x", docker_conn="unix:///nonexistent/docker.sock"',
        refused='image="x", docker_conn="tcp://127.0.0.1:1"',
    )
    for error in errors("dock_endpoint", "nosocket"):
        assert "cannot reach the Docker endpoint unix:///nonexistent/docker.sock" in error
        assert "FileNotFoundError" in error
    for error in errors("dock_endpoint", "refused"):
        assert "cannot reach the Docker endpoint tcp://127.0.0.1:1" in error
        assert "ConnectionRefusedError" in error


PERMISSION_DRIVER = """
from flowsched import operations
from tests.harness import drive, run_finished
operations.trigger_dag("dock_perm")
drive(run_finished("dock_perm"), timeout=90)
"""


def test_socket_permission_error_says_which_user_to_add_to_which_group(
    podman, monkeypatch: pytest.MonkeyPatch
):
    """The scheduler and its task processes run as 'nobody', like a worker user outside the
    'docker' group; the real Podman socket is root's with mode 0600, so connect() is refused.
    """
    assert podman.socket.stat().st_mode & 0o077 == 0  # what makes this test meaningful
    base = Path(tempfile.mkdtemp(prefix="flowsched-nobody-"))
    try:
        base.chmod(0o755)
        home = _make_home(base, f"sqlite:///{base / 'flowsched.db'}", monkeypatch)
        write(home, "dock_perm", ping=f'image="{podman.image}", pull_policy="never"')
        parse()
        reset_engine()
        subprocess.run(["chown", "-R", "nobody:nogroup", str(base)], check=True)
        nobody = ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups"]
        result = subprocess.run(
            [*nobody, sys.executable, "-c", PERMISSION_DRIVER],
            cwd=REPO,
            env={**os.environ, "FLOWSCHED_DOCKER_HOST": podman.url},
            capture_output=True,
            text=True,
            timeout=150,
        )
        assert result.returncode == 0, result.stderr
        assert run_state("dock_perm") == "failed"
        for error in errors("dock_perm", "ping"):
            assert f"permission denied on the Docker socket {podman.socket}" in error
            assert "owner root:root, mode 0600" in error
            assert "for user 'nobody'" in error
            assert "usermod -aG docker nobody" in error
            assert "flowsched_worker_docker_access: true" in error
        assert podman.containers("dock_perm") == []
    finally:
        reset_engine()
        set_config(None)
        shutil.rmtree(base, ignore_errors=True)


def test_bad_arguments_fail_when_the_dag_is_parsed():
    with DAG("bad_args", schedule=None) as dag:
        for kwargs, message in (
            ({"pull_policy": "sometimes"}, "pull_policy must be one of missing, always, never"),
            ({"mounts": ["relative"]}, "mount 'relative'"),
            ({"mounts": ["/src:dst"]}, "the target must be an absolute path"),
            ({"mounts": ["/a:/b:rx"]}, "mount '/a:/b:rx'"),
            ({"docker_conn": "http://host"}, "bad Docker endpoint 'http://host'"),
            ({"cpus": 0}, "cpus must be > 0"),
        ):
            with pytest.raises(DagDefinitionError, match=message):
                DockerOperator(task_id="t", image="busybox", **kwargs)
    assert dag.tasks == {}


def test_endpoint_precedence(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delenv("FLOWSCHED_DOCKER_HOST", raising=False)
    assert resolve_docker_host(None) == DEFAULT_DOCKER_HOST == "unix:///var/run/docker.sock"
    monkeypatch.setenv("FLOWSCHED_DOCKER_HOST", "tcp://docker.internal:2375")
    assert resolve_docker_host(None) == "tcp://docker.internal:2375"
    assert resolve_docker_host("unix:///run/user.sock") == "unix:///run/user.sock"


def test_example_dag_parses_without_any_docker_endpoint(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("FLOWSCHED_DOCKER_HOST", "unix:///nonexistent/docker.sock")
    example = REPO / "flowsched" / "example_dags" / "example_docker.py"
    _, _, dags = exec_dag_file(example, example.name)
    (dag,) = dags
    assert dag.dag_id == "example_docker" and dag.schedule.kind == "none"  # never runs by itself
    assert isinstance(dag.tasks["checksum"], DockerOperator)
