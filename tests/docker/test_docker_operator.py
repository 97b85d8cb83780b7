"""DockerOperator tasks run by the real scheduler and runner against Podman's Docker API."""

from __future__ import annotations

import contextlib
import os
import signal
import time
from pathlib import Path

from sqlalchemy import select

from flowsched import operations
from flowsched.db.engine import session_scope
from flowsched.db.models import TaskInstance
from flowsched.providers import docker as docker_provider
from flowsched.state import TaskState
from flowsched.timezone import default_timezone
from tests.harness import drive, parse, run_finished, run_state, tries

HEADER = """
from datetime import datetime, timedelta
from flowsched import DAG
from flowsched.providers.docker import DockerOperator
"""


def local_ds(run) -> str:
    """``{{ ds }}`` of a run: its logical date in the cluster's zone (UTC+8 by default)."""
    return run.logical_date.astimezone(default_timezone()).strftime("%Y-%m-%d")


def log_of(home, dag_id: str, task_id: str, attempt: int = 1) -> str:
    paths = (home.logs / f"dag_id={dag_id}").glob(
        f"run_id=*/task_id={task_id}/attempt={attempt}.log"
    )
    return "".join(path.read_text() for path in paths)  # "" until the try has started


def write(home, dag_id: str, body: str, **values: object) -> None:
    home.write_dag(f"{dag_id}.py", HEADER + body.format(dag_id=dag_id, **values))
    parse()


SUCCESS = """
with DAG("{dag_id}", start_date=datetime(2026, 1, 1), schedule=None) as dag:
    DockerOperator(
        task_id="inside",
        image="{image}",
        command=["sh", "-c", "echo to-stderr >&2; echo hello {{{{ ds }}}}; echo FOO=$FOO; "
                 "echo DAG=$FLOWSCHED_DAG_ID; "
                 "cat /data/in.txt; echo written > /out/result.txt; "
                 "touch /data/nope 2>/dev/null || echo data-is-read-only; "
                 "echo nets: $(ls /sys/class/net); "
                 "echo mem: $(cat /sys/fs/cgroup/memory/memory.limit_in_bytes "
                 "/sys/fs/cgroup/memory.max 2>/dev/null); "
                 "printf last-line"],
        environment={{"FOO": "bar-{{{{ run_id }}}}"}},
        mounts=["{data}:/data:ro", "{out}:/out"],
        network_mode="none",
        mem_limit="64m",
        cpus=0.5,
        pull_policy="never",
    )
"""


def test_success_streams_output_with_environment_mounts_and_limits(docker_home, podman):
    data, out = docker_home.root / "data", docker_home.root / "out"
    data.mkdir()
    out.mkdir()
    (data / "in.txt").write_text("from-the-host\n")
    write(docker_home, "dock_ok", SUCCESS, image=podman.image, data=data, out=out)
    run = operations.trigger_dag("dock_ok")
    drive(run_finished("dock_ok"))
    log = log_of(docker_home, "dock_ok", "inside")
    assert run_state("dock_ok") == "success", log
    ds = local_ds(run)
    lines = log.splitlines()
    for expected in (
        f"hello {ds}",
        f"FOO=bar-{run.run_id}",
        "DAG=dock_ok",
        "from-the-host",
        "data-is-read-only",
        "nets: lo",  # network_mode="none": no interface but loopback
        f"mem: {64 * 1024 * 1024}",
        "to-stderr",
        "last-line",  # no trailing newline: still reaches the log
    ):
        assert expected in lines, (expected, log)
    assert (out / "result.txt").read_text() == "written\n"
    (try_,) = tries("dock_ok", "inside")
    assert try_.state == "success"
    assert try_.rendered_fields["environment"] == {"FOO": f"bar-{run.run_id}"}
    assert podman.containers("dock_ok") == []  # auto_remove


FAILING = """
with DAG("{dag_id}", start_date=datetime(2026, 1, 1), schedule=None) as dag:
    DockerOperator(
        task_id="exit3", image="{image}", network_mode="none", pull_policy="never",
        command="sh -c 'echo attempt $FLOWSCHED_TRY_NUMBER; exit 3'",
        retries=1, retry_delay=0,
    )
"""


def test_nonzero_exit_fails_the_task_and_is_retried(docker_home, podman):
    write(docker_home, "dock_fail", FAILING, image=podman.image)
    operations.trigger_dag("dock_fail")
    drive(run_finished("dock_fail"))
    assert run_state("dock_fail") == "failed"
    history = tries("dock_fail", "exit3")
    assert [t.state for t in history] == ["failed", "failed"]
    for t in history:
        assert f"container of image {podman.image} exited with code 3" in t.error
    assert "attempt 1" in log_of(docker_home, "dock_fail", "exit3", 1)
    assert "attempt 2" in log_of(docker_home, "dock_fail", "exit3", 2)
    assert podman.containers("dock_fail") == []


QUIET = """
with DAG("{dag_id}", start_date=datetime(2026, 1, 1), schedule=None) as dag:
    DockerOperator(
        task_id="quiet", image="{image}", network_mode="none", pull_policy="never",
        command=["sh", "-c", "sleep 10; echo after-silence"],
    )
    DockerOperator(
        task_id="oom", image="{image}", network_mode="none", pull_policy="never",
        command=["sh", "-c", "a=0123456789; while true; do a=$a$a; done"], mem_limit="16m",
    )
"""


def test_a_silent_container_outlives_the_api_timeout_and_oom_is_named(
    docker_home, podman, monkeypatch
):
    # Podman answers a follow request for logs only once there is output: the log stream
    # must not be held to the API timeout (60 s; 4 s here: under the container's 10 s of
    # silence, above a slow API call on a loaded machine; task processes are forked).
    monkeypatch.setattr(docker_provider, "API_TIMEOUT", 4)
    write(docker_home, "dock_quiet", QUIET, image=podman.image)
    operations.trigger_dag("dock_quiet")
    drive(run_finished("dock_quiet"))
    (quiet,) = tries("dock_quiet", "quiet")
    assert quiet.state == "success", log_of(docker_home, "dock_quiet", "quiet")
    assert "after-silence" in log_of(docker_home, "dock_quiet", "quiet").splitlines()
    (oom,) = tries("dock_quiet", "oom")
    assert "exited with code 137 (killed" in oom.error and "mem_limit=16m" in oom.error
    assert podman.containers("dock_quiet") == []


SLOW = """
with DAG("{dag_id}", start_date=datetime(2026, 1, 1), schedule=None) as dag:
    DockerOperator(
        task_id="slow", image="{image}", network_mode="none", pull_policy="never",
        command=["sh", "-c", {command!r}],
        auto_remove=False,  # a stopped try's container is removed all the same
        stop_timeout=1,
        execution_timeout={timeout},
        retries=0,
    )
"""


def test_timeout_stops_and_removes_the_container(docker_home, podman):
    write(
        docker_home,
        "dock_slow",
        SLOW,
        image=podman.image,
        command="echo started; sleep 60",
        timeout=3,
    )
    operations.trigger_dag("dock_slow")
    drive(run_finished("dock_slow"), timeout=45)
    (try_,) = tries("dock_slow", "slow")
    log = log_of(docker_home, "dock_slow", "slow")
    assert try_.state == "failed" and "execution_timeout" in try_.error, log
    assert try_.duration < 20
    assert "started" in log.splitlines()  # the container was running when time ran out
    assert "stopping and removing container" in log
    assert podman.containers("dock_slow") == []


def _running_pid(dag_id: str) -> int | None:
    with session_scope() as session:
        ti = session.scalar(select(TaskInstance).where(TaskInstance.dag_id == dag_id))
        return ti.pid if ti is not None and ti.state == "running" else None


def test_sigterm_of_the_try_stops_the_container_and_the_try_runs_again(docker_home, podman):
    command = 'if [ "$FLOWSCHED_TRY_NUMBER" = 1 ]; then echo started; sleep 60; fi; echo second'
    write(docker_home, "dock_term", SLOW, image=podman.image, command=command, timeout=None)
    operations.trigger_dag("dock_term")
    seen: dict[str, object] = {}

    def kill_first_try_once_started() -> bool:
        if "containers" not in seen and "started" in log_of(docker_home, "dock_term", "slow"):
            seen["containers"] = podman.containers("dock_term")
            pid = _running_pid("dock_term")
            assert pid is not None
            os.kill(pid, signal.SIGTERM)
        return run_state("dock_term") in ("success", "failed")

    drive(kill_first_try_once_started, timeout=60)
    assert seen["containers"] == [("1", "running")]  # the first try's, while it ran
    first, second = tries("dock_term", "slow")
    assert "SIGTERM" in first.error and first.duration < 20
    assert "stopping and removing container" in log_of(docker_home, "dock_term", "slow", 1)
    assert second.state == "success" and run_state("dock_term") == "success"
    assert "second" in log_of(docker_home, "dock_term", "slow", 2).splitlines()
    # auto_remove=False keeps the container of the try that exited on its own, only that one.
    assert podman.containers("dock_term") == [("2", "exited")]


def test_marking_a_running_try_failed_stops_the_container(docker_home, podman):
    write(
        docker_home,
        "dock_mark",
        SLOW,
        image=podman.image,
        command="echo started; sleep 60",
        timeout=None,
    )
    run = operations.trigger_dag("dock_mark")
    marked_at: list[float] = []

    def mark_once_started_then_wait_for_the_runner() -> bool:
        log = log_of(docker_home, "dock_mark", "slow")
        if not marked_at and "started" in log:
            operations.mark_task("dock_mark", run.run_id, "slow", TaskState.FAILED)
            marked_at.append(time.monotonic())
        return " finished: " in log

    drive(mark_once_started_then_wait_for_the_runner, timeout=60)
    assert time.monotonic() - marked_at[0] < 45  # the container would have slept 60s
    log = log_of(docker_home, "dock_mark", "slow")
    assert "no longer running in the database" in log
    assert "stopping and removing container" in log
    assert podman.containers("dock_mark") == []


def test_the_example_dag_runs(docker_home, podman):
    example = Path(__file__).parents[2] / "flowsched" / "example_dags" / "example_docker.py"
    docker_home.write_dag("example_docker.py", example.read_text())
    parse()
    with contextlib.closing(podman.client()) as client:
        # The example names busybox:1.36 with pull_policy "missing"; there is no registry
        # here, so put the test image under that name first.
        client.images.get(podman.image).tag("docker.io/library/busybox", "1.36")
    run = operations.trigger_dag("example_docker")
    drive(run_finished("example_docker"))
    assert run_state("example_docker") == "success"
    line = f"checksum partition {local_ds(run)}"
    assert line in log_of(docker_home, "example_docker", "checksum").splitlines()
    assert line in log_of(docker_home, "example_docker", "done").splitlines()  # its XCom


ONE = """
with DAG("{dag_id}", start_date=datetime(2026, 1, 1), schedule=None) as dag:
    DockerOperator(task_id="one", image="{image}", network_mode="none", pull_policy="never",
                   command="echo fresh")
"""


def test_a_new_try_removes_containers_left_by_earlier_tries(docker_home, podman):
    write(docker_home, "dock_left", ONE, image=podman.image)
    labels = {"dag_id": "dock_left", "task_id": "one", "run_id": "r1"}
    with contextlib.closing(podman.client()) as client:
        # What a try killed with SIGKILL leaves: its container, still running.
        client.containers.run(
            podman.image,
            ["sleep", "60"],
            detach=True,
            network_mode="none",
            labels={f"flowsched.{k}": v for k, v in {**labels, "try_number": "0"}.items()},
        )
    assert podman.containers("dock_left") == [("0", "running")]
    operations.trigger_dag("dock_left", run_id="r1")
    drive(run_finished("dock_left"))
    assert run_state("dock_left") == "success"
    log = log_of(docker_home, "dock_left", "one")
    assert "stopping and removing container" in log and "try_number=0" in log
    assert "fresh" in log.splitlines()
    assert podman.containers("dock_left") == []


def test_the_rest_of_the_output_is_taken_by_lines_whatever_the_order_of_stdout_and_stderr():
    from collections import Counter

    from flowsched.providers.docker import _not_yet_copied

    # The stream gave stdout's lines first; the stored log starts with stderr's line.
    seen = Counter([b"hello", b"again", b"hello"])
    full = [b"to-stderr", b"hello", b"again", b"hello", b"hello", b"last-line"]
    assert _not_yet_copied(full, seen) == [b"to-stderr", b"hello", b"last-line"]
