"""CLI commands of the distributed side: ``worker``, ``workers``, ``flower``, ``tasks log``.

:func:`register` adds them to the main group. ``tasks log`` is registered
here again (replacing the core's) because ``--follow`` needs the log
server's offsets and the try's own host, which may differ between tries.
"""

from __future__ import annotations

import os
import sys
import time

import click
from sqlalchemy import select

from flowsched.cli.output import table
from flowsched.config import get_config
from flowsched.exceptions import FlowschedError
from flowsched.processes import python_command
from flowsched.secret_policy import check_service_password
from flowsched.tls import web_server_files


def _split_queues(raw: str | None) -> list[str] | None:
    if not raw:
        return None
    queues = [name.strip() for name in raw.split(",") if name.strip()]
    return queues or None


@click.command()
@click.option("--nodename", "-n", default=None, help="Celery nodename (default: {ip}@{ip}).")
@click.option("--concurrency", "-c", type=click.IntRange(min=1), default=None)
@click.option("--queues", "-q", default=None, help="Comma-separated queues to consume.")
@click.option("--allow-root", is_flag=True, help="Run even as root (not recommended).")
def worker(
    nodename: str | None, concurrency: int | None, queues: str | None, allow_root: bool
) -> None:
    """Run a Celery worker and its log server in the foreground (SIGTERM: warm shutdown)."""
    from flowsched.celery.worker import run_worker

    code = run_worker(
        nodename=nodename,
        concurrency=concurrency,
        queues=_split_queues(queues),
        allow_root=allow_root,
    )
    sys.exit(code)


@click.command()
@click.option("--timeout", type=float, default=1.0, help="Seconds to wait for replies.")
def workers(timeout: float) -> None:
    """Live workers: nodename, hostname, version, queues, running tries."""
    from kombu.exceptions import OperationalError

    from flowsched.celery.inspect import list_workers

    try:
        found = list_workers(timeout=timeout)
    except OperationalError as exc:
        raise FlowschedError(f"cannot reach the broker: {exc}") from exc
    if not found:
        click.echo(f"no worker answered within {timeout:g} s", err=True)
        sys.exit(1)
    rows = [
        [w["nodename"], w["hostname"], w["version"], ",".join(w["queues"]), w["active"]]
        for w in found
    ]
    table(rows, ["nodename", "hostname", "version", "queues", "active"])


@click.command()
def flower() -> None:
    """Run Flower on [flower] port against the cluster's broker, with basic auth."""
    conf = get_config()
    if not conf.flower.basic_auth or ":" not in conf.flower.basic_auth:
        raise FlowschedError(
            "[flower] basic_auth must be set to user:password: Flower can stop workers "
            "and must not be reachable without a password"
        )
    check_service_password(conf.flower.basic_auth.split(":", 1)[1], "[flower] basic_auth")
    env = dict(os.environ)
    # Passed by environment, not argv, so the password is not in `ps` output.
    env["FLOWER_BASIC_AUTH"] = conf.flower.basic_auth
    argv = [
        *python_command("-m", "celery"),  # -P: a ./flowsched folder must not shadow the package
        "-A",
        "flowsched.celery.app",
        "flower",
        f"--address={conf.flower.host}",
        f"--port={conf.flower.port}",
    ]
    tls = web_server_files(conf)
    if tls:
        argv += [f"--certfile={tls[0]}", f"--keyfile={tls[1]}"]
    sys.stdout.flush()
    os.execve(sys.executable, argv, env)


def _try_row(
    dag_id: str, task_id: str, run_id: str, try_number: int | None, map_index: int = -1
) -> tuple[int, str]:
    """(try number, hostname) of the requested try, default the latest."""
    from flowsched.db.engine import session_scope
    from flowsched.db.models import TaskTry
    from flowsched.operations import task_states

    ti = next(
        (
            t
            for t in task_states(dag_id, run_id)
            if t.task_id == task_id and t.map_index == map_index
        ),
        None,
    )
    if ti is None:
        where = f" with map_index {map_index}" if map_index >= 0 else ""
        raise FlowschedError(f"run '{run_id}' of '{dag_id}' has no task '{task_id}'{where}")
    number = try_number or ti.try_number
    if number < 1:
        raise FlowschedError(f"{dag_id}.{task_id} has not run yet in {run_id}")
    with session_scope() as session:
        row = session.scalar(
            select(TaskTry).where(TaskTry.task_instance_id == ti.id, TaskTry.try_number == number)
        )
        hostname = row.hostname if row is not None else None
    return number, hostname or (ti.hostname if number == ti.try_number else None) or ""


def _try_finished(dag_id: str, task_id: str, run_id: str, number: int, map_index: int) -> bool:
    from flowsched.db.engine import session_scope
    from flowsched.db.models import TaskTry

    with session_scope() as session:
        state = session.scalar(
            select(TaskTry.state).where(
                TaskTry.dag_id == dag_id,
                TaskTry.run_id == run_id,
                TaskTry.task_id == task_id,
                TaskTry.try_number == number,
                TaskTry.map_index == map_index,
            )
        )
    return state not in ("queued", "running")


@click.command("log")
@click.argument("dag_id")
@click.argument("task_id")
@click.argument("run_id")
@click.option("--try", "try_number", type=int, default=None, help="Default: the latest try.")
@click.option("--follow", "-f", is_flag=True, help="Keep printing until the try ends.")
@click.option("--map-index", type=int, default=-1, help="The copy of a mapped task.")
def tasks_log(
    dag_id: str, task_id: str, run_id: str, try_number: int | None, follow: bool, map_index: int
) -> None:
    """Print a try's log, fetched from the host that ran it (streamed, any size)."""
    from flowsched.task_logs.client import follow_task_log, open_task_log

    number, hostname = _try_row(dag_id, task_id, run_id, try_number, map_index)
    if not follow:
        out = click.get_binary_stream("stdout")
        with open_task_log(hostname, dag_id, run_id, task_id, number, map_index) as stream:
            for chunk in stream:
                out.write(chunk)
        out.flush()
        return
    while not hostname:
        # Queued, not started: the host is known once a worker claims it.
        if _try_finished(dag_id, task_id, run_id, number, map_index):
            raise FlowschedError(f"{dag_id}.{task_id} try {number} ended without running")
        time.sleep(1.0)
        number, hostname = _try_row(dag_id, task_id, run_id, number, map_index)
    for text in follow_task_log(
        hostname,
        dag_id,
        run_id,
        task_id,
        number,
        finished=lambda: _try_finished(dag_id, task_id, run_id, number, map_index),
        map_index=map_index,
    ):
        click.echo(text, nl=False)


def register(cli: click.Group) -> None:
    """Add the distributed commands to ``flowsched``."""
    cli.add_command(worker)
    cli.add_command(workers)
    cli.add_command(flower)
    tasks = cli.commands.get("tasks")
    if isinstance(tasks, click.Group):
        tasks.add_command(tasks_log)
