"""The ``flowsched`` command.

Every subcommand turns flowsched's own errors into one clear line on stderr
and exit code 1, instead of a traceback.
"""

from __future__ import annotations

import json
import sys
from datetime import datetime
from typing import Any

import click
from sqlalchemy import func, select

from flowsched import __version__
from flowsched.celery.commands import register as register_celery_commands
from flowsched.cli.output import setup_logging, table
from flowsched.cli.secret_commands import register as register_secret_commands
from flowsched.cli.web_commands import register as register_web_commands
from flowsched.config import get_config, render_defaults
from flowsched.exceptions import FlowschedError
from flowsched.timezone import display, parse_datetime


class FlowschedGroup(click.Group):
    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except FlowschedError as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(1)


def _parse_date(value: str | None) -> datetime | None:
    if value is None:
        return None
    try:
        return parse_datetime(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


@click.group(cls=FlowschedGroup)
@click.version_option(__version__, prog_name="flowsched")
def cli() -> None:
    """flowsched: a distributed workflow scheduler."""


@cli.command()
def version() -> None:
    """Print the installed version."""
    click.echo(__version__)


# -- config ---------------------------------------------------------------
@cli.group()
def config() -> None:
    """Inspect the configuration."""


@config.command("show")
@click.option("--defaults", is_flag=True, help="Print every option with its default and meaning.")
def config_show(defaults: bool) -> None:
    """Print the effective configuration (secrets hidden)."""
    if defaults:
        click.echo(render_defaults())
        return
    conf = get_config()
    click.echo(f"# source: {conf.source or 'defaults and environment only'}")
    for section, values in conf.as_dict().items():
        click.echo(f"[{section}]")
        for key, value in values.items():
            click.echo(f"{key} = {value}")
        click.echo()


# -- db -------------------------------------------------------------------
@cli.group()
def db() -> None:
    """Create, migrate and check the metadata database."""


@db.command("upgrade")
def db_upgrade() -> None:
    """Create or migrate the schema to the newest version (idempotent)."""
    from flowsched.db import migrate

    applied = migrate.upgrade()
    if applied:
        click.echo(f"applied migrations: {', '.join(applied)}")
    else:
        click.echo(f"schema already at {migrate.head_revision()}: nothing to do")


@db.command("check")
def db_check() -> None:
    """Check connectivity and pending migrations; exit 1 if either fails."""
    from flowsched.db import migrate

    status = migrate.check()
    click.echo(f"database: {status.url} ({status.dialect} {status.server_version})")
    click.echo(f"schema: {status.current or 'empty'} (newest {status.head})")
    if status.pending:
        click.echo("pending migrations: run `flowsched db upgrade`", err=True)
        sys.exit(1)
    click.echo("ok")


# -- long-running components ---------------------------------------------
@cli.command()
@click.option("--num-runs", type=int, default=None, help="Stop after this many loop passes.")
@click.option("--no-dag-processor", is_flag=True, help="Do not start the DAG processor.")
def scheduler(num_runs: int | None, no_dag_processor: bool) -> None:
    """Run the scheduler in the foreground (SIGTERM stops it cleanly)."""
    from flowsched.executors import get_executor
    from flowsched.scheduler.loop import Scheduler

    setup_logging()
    Scheduler(get_executor(), num_runs=num_runs, run_dag_processor=not no_dag_processor).run()


@cli.command("dag-processor")
@click.option("--num-runs", type=int, default=None, help="Stop after this many passes.")
def dag_processor(num_runs: int | None) -> None:
    """Parse the DAG folder every scheduler.dag_dir_list_interval seconds."""
    from flowsched.dag_processor import DagProcessor

    setup_logging()
    DagProcessor(num_runs=num_runs).run()


@cli.command()
def standalone() -> None:
    """Everything on this machine: SQLite, example DAGs, scheduler. Ctrl-C stops it."""
    from flowsched.standalone import run_standalone

    run_standalone()


@cli.command()
def plugins() -> None:
    """Loaded plugins, where each comes from, its fingerprint, and failed imports."""
    from flowsched.plugins import load_plugins, plugins_folder

    registry = load_plugins()
    click.echo(f"plugins folder: {plugins_folder()}")
    rows = [
        [
            loaded.name,
            loaded.source,
            (loaded.fingerprint or "")[:16] or None,
            ", ".join(op.__name__ for op in loaded.plugin.operators) or None,
            ", ".join(loaded.plugin.macros) or None,
            ", ".join(h.__name__ for h in loaded.plugin.hooks) or None,
            len(loaded.plugin.blueprints),
        ]
        for loaded in registry.plugins
    ]
    table(rows, ["name", "source", "sha256", "operators", "macros", "hooks", "views"])
    for source, error in registry.errors.items():
        click.echo(f"\nfailed to load {source}:\n{error}", err=True)
    if registry.errors:
        sys.exit(1)


# -- pools ----------------------------------------------------------------
@cli.group()
def pools() -> None:
    """Limit how many tasks of a kind run at once across the cluster."""


@pools.command("list")
def pools_list() -> None:
    """Every pool with its slots and how many are in use."""
    from flowsched.operations import list_pools

    table([list(row) for row in list_pools()], ["pool", "slots", "in use", "description"])


@pools.command("set")
@click.argument("name")
@click.argument("slots", type=int)
@click.option("--description", default=None)
def pools_set(name: str, slots: int, description: str | None) -> None:
    """Create a pool or change its slots."""
    from flowsched.operations import set_pool

    set_pool(name, slots, description, actor="cli")
    click.echo(f"pool {name}: {slots} slots")


@pools.command("delete")
@click.argument("name")
def pools_delete(name: str) -> None:
    """Delete a pool (not the default one, not while its tasks run)."""
    from flowsched.operations import delete_pool

    delete_pool(name, actor="cli")
    click.echo(f"deleted pool {name}")


# -- dags -----------------------------------------------------------------
@cli.group()
def dags() -> None:
    """List, show, trigger, pause, backfill and delete DAGs."""


@dags.command("list")
def dags_list() -> None:
    """Every known DAG: schedule, when its next run is created, its last run."""
    from flowsched.db.engine import session_scope
    from flowsched.db.models import Dag, DagRun

    with session_scope() as session:
        rows = []
        for dag in session.scalars(select(Dag).order_by(Dag.dag_id)):
            last = session.scalar(
                select(DagRun)
                .where(DagRun.dag_id == dag.dag_id)
                .order_by(DagRun.logical_date.desc())
                .limit(1)
            )
            rows.append(
                [
                    dag.dag_id,
                    dag.schedule or "None",
                    "yes" if dag.is_paused else "no",
                    "" if dag.is_active else "(file gone)",
                    display(dag.next_run_create_after) if dag.next_run_create_after else None,
                    f"{last.run_id} {last.state}" if last else None,
                    dag.fileloc,
                ]
            )
        errors = session.scalar(select(func.count()).select_from(_import_error_model()))
    table(rows, ["dag_id", "schedule", "paused", "active", "next run at", "last run", "file"])
    if errors:
        click.echo(f"\n{errors} file(s) failed to import: see `flowsched dags errors`", err=True)


def _import_error_model() -> Any:
    from flowsched.db.models import ImportError_

    return ImportError_


@dags.command("errors")
def dags_errors() -> None:
    """Import errors of DAG files, with tracebacks."""
    from flowsched.db.engine import session_scope

    with session_scope() as session:
        for error in session.scalars(select(_import_error_model())):
            click.echo(f"== {error.filename} ({display(error.created_at)})")
            click.echo(error.traceback)


@dags.command("show")
@click.argument("dag_id")
def dags_show(dag_id: str) -> None:
    """Tasks, dependencies and the current version of a DAG."""
    from flowsched.db.engine import session_scope
    from flowsched.scheduler.runs import latest_version
    from flowsched.serialization import SerializedDAG

    with session_scope() as session:
        dag_row, version = latest_version(session, dag_id)
        dag = SerializedDAG(version.serialized)
        click.echo(f"DAG {dag_id}  ({dag_row.fileloc})")
        click.echo(f"schedule: {dag_row.schedule or 'None'}  timezone: {dag_row.timezone}")
        click.echo(f"version: {version.version_number}  sha256: {version.fingerprint}")
        click.echo(f"paused: {dag_row.is_paused}  max_active_runs: {dag_row.max_active_runs}")
        click.echo("tasks:")
        for task_id in dag.topological_order():
            spec = dag.tasks[task_id]
            upstream = f" <- {', '.join(spec.upstream)}" if spec.upstream else ""
            click.echo(
                f"  {task_id} [{spec.operator}, {spec.trigger_rule.value}, "
                f"retries={spec.retries}]{upstream}"
            )


@dags.command("trigger")
@click.argument("dag_id")
@click.option("--conf", "conf_text", default=None, help="JSON object passed to the run.")
@click.option("--run-id", default=None)
@click.option("--logical-date", default=None, help="ISO date; naive means the cluster zone.")
def dags_trigger(
    dag_id: str, conf_text: str | None, run_id: str | None, logical_date: str | None
) -> None:
    """Start a manual run now."""
    from flowsched.operations import trigger_dag

    conf = None
    if conf_text:
        try:
            conf = json.loads(conf_text)
        except json.JSONDecodeError as exc:
            raise click.BadParameter(f"not valid JSON: {exc}", param_hint="--conf") from None
    run = trigger_dag(
        dag_id, conf=conf, run_id=run_id, logical_date=_parse_date(logical_date), actor="cli"
    )
    click.echo(f"created run {run.run_id}")


@dags.command("pause")
@click.argument("dag_id")
def dags_pause(dag_id: str) -> None:
    """Stop creating and running new runs of a DAG."""
    from flowsched.operations import set_paused

    set_paused(dag_id, True, actor="cli")
    click.echo(f"paused {dag_id}")


@dags.command("unpause")
@click.argument("dag_id")
def dags_unpause(dag_id: str) -> None:
    """Resume a paused DAG."""
    from flowsched.operations import set_paused

    set_paused(dag_id, False, actor="cli")
    click.echo(f"unpaused {dag_id}")


@dags.command("backfill")
@click.argument("dag_id")
@click.option("--start-date", "-s", required=True)
@click.option("--end-date", "-e", required=True)
def dags_backfill(dag_id: str, start_date: str, end_date: str) -> None:
    """Create runs for every interval between two dates (the scheduler runs them)."""
    from flowsched.operations import backfill

    start, end = _parse_date(start_date), _parse_date(end_date)
    assert start is not None and end is not None
    created = backfill(dag_id, start, end, actor="cli")
    click.echo(f"created {len(created)} backfill run(s)")
    for run_id in created:
        click.echo(f"  {run_id}")


@dags.command("delete")
@click.argument("dag_id")
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
@click.option("--force", is_flag=True, help="Delete even while a run is queued or running.")
def dags_delete(dag_id: str, yes: bool, force: bool) -> None:
    """Delete a DAG and everything that refers to it, in one transaction."""
    from flowsched.operations import delete_dag

    if not yes:
        click.confirm(f"Delete DAG '{dag_id}' and all its runs, tasks, logs rows?", abort=True)
    result = delete_dag(dag_id, force=force, actor="cli")
    click.echo(f"deleted DAG {dag_id}:")
    for table_name, count in result.counts.items():
        click.echo(f"  {table_name}: {count}")


# -- tasks ----------------------------------------------------------------
@cli.group()
def tasks() -> None:
    """Clear, run and inspect task instances."""


@tasks.command("clear")
@click.argument("dag_id")
@click.option("--task", "task_regex", default=None, help="Regex of task ids.")
@click.option("--run", "run_id", default=None, help="Only this run.")
@click.option("--only-failed", is_flag=True, help="Only failed and upstream_failed tasks.")
@click.option("-u", "--upstream", is_flag=True, help="Also clear everything upstream.")
@click.option("-d", "--downstream", is_flag=True, help="Also clear everything downstream.")
@click.option("--past", is_flag=True, help="With --run: also the runs before it.")
@click.option("--future", is_flag=True, help="With --run: also the runs after it.")
@click.option("--dry-run", is_flag=True, help="Only list what would be cleared.")
@click.option(
    "--map-index",
    "map_indexes",
    type=int,
    multiple=True,
    help="Only this copy of the matching mapped tasks (repeatable).",
)
def tasks_clear(
    dag_id: str,
    task_regex: str | None,
    run_id: str | None,
    only_failed: bool,
    upstream: bool,
    downstream: bool,
    past: bool,
    future: bool,
    dry_run: bool,
    map_indexes: tuple[int, ...],
) -> None:
    """Re-run tasks from the failure point; what succeeded stays done."""
    from flowsched.operations import clear_tasks

    result = clear_tasks(
        dag_id,
        task_regex=task_regex,
        run_id=run_id,
        only_failed=only_failed,
        upstream=upstream,
        downstream=downstream,
        past=past,
        future=future,
        dry_run=dry_run,
        actor="cli",
        map_indexes=list(map_indexes) if map_indexes else None,
    )
    if dry_run:
        click.echo(f"would clear {len(result.cleared)} task instance(s)")
        for run, task in result.cleared:
            click.echo(f"  {run}  {task}")
        return
    click.echo(f"cleared {len(result.cleared)} task instance(s)")
    for run, task in result.cleared:
        click.echo(f"  {run}  {task}")


@tasks.command("run")
@click.argument("dag_id")
@click.argument("task_id")
@click.argument("run_id")
@click.option(
    "--map-index", type=int, default=-1, show_default=True, help="The copy of a mapped task."
)
def tasks_run(dag_id: str, task_id: str, run_id: str, map_index: int) -> None:
    """Run one task of a run in the foreground, for debugging."""
    from flowsched.hostname import get_hostname
    from flowsched.supervisor import run_try
    from flowsched.task_runner import foreground_workload

    workload = foreground_workload(dag_id, task_id, run_id, map_index)
    run_try(workload, nodename=f"cli@{get_hostname()}", foreground=True)
    from flowsched.operations import task_states

    state = next(
        ti.state
        for ti in task_states(dag_id, run_id)
        if ti.task_id == task_id and ti.map_index == map_index
    )
    index = f"[{map_index}]" if map_index >= 0 else ""
    click.echo(f"{dag_id}.{task_id}{index} try {workload.try_number}: {state}")
    if state not in ("success", "up_for_reschedule"):  # a sensor's reschedule is no failure
        sys.exit(1)


@tasks.command("mark")
@click.argument("dag_id")
@click.argument("task_id")
@click.argument("run_id")
@click.argument("state", type=click.Choice(["success", "failed"]))
@click.option("-u", "--upstream", is_flag=True, help="Also the tasks upstream.")
@click.option("-d", "--downstream", is_flag=True, help="Also the tasks downstream.")
@click.option("--past", is_flag=True, help="Also in the runs before this one.")
@click.option("--future", is_flag=True, help="Also in the runs after this one.")
@click.option("--dry-run", is_flag=True, help="Only list what would be marked.")
def tasks_mark(
    dag_id: str,
    task_id: str,
    run_id: str,
    state: str,
    upstream: bool,
    downstream: bool,
    past: bool,
    future: bool,
    dry_run: bool,
) -> None:
    """Mark a task success or failed by hand, as the web page's Mark buttons do.

    Arguments in Airflow's order, as `tasks run`: DAG TASK RUN STATE.
    """
    from flowsched.operations import mark_tasks
    from flowsched.state import TaskState

    changed = mark_tasks(
        dag_id,
        run_id,
        task_id,
        TaskState(state),
        upstream=upstream,
        downstream=downstream,
        past=past,
        future=future,
        dry_run=dry_run,
        actor="cli",
    )
    click.echo(f"{'would mark' if dry_run else 'marked'} {len(changed)} task instance(s) {state}")
    for run, task in changed:
        click.echo(f"  {run}  {task}")


def _one_line(text: str | None) -> str | None:
    return " ".join(text.split()) if text else None


@tasks.command("states")
@click.argument("dag_id")
@click.argument("run_id")
def tasks_states(dag_id: str, run_id: str) -> None:
    """The state of every task in a run, with the error of each one's current try
    and, for a task not queued yet, what holds it back (see `tasks failed-deps`).

    A mapped task's copies are listed as ``task_id[map_index]``, the way `tasks run`
    names them, so the columns stay the same for scripts that read them."""
    from flowsched.operations import task_states, try_errors, waiting_reasons

    errors = try_errors(dag_id, run_id)
    waiting = waiting_reasons(dag_id, run_id)
    rows = [
        [
            f"{ti.task_id}[{ti.map_index}]" if ti.map_index >= 0 else ti.task_id,
            ti.state,
            ti.try_number,
            ti.worker_nodename,
            ti.hostname,
            display(ti.start_date, seconds=True) if ti.start_date else None,
            f"{ti.duration:.2f}s" if ti.duration is not None else None,
            " ".join(errors[key].split())
            if (key := (ti.task_id, ti.map_index)) in errors
            else None,
            waiting.get(ti.task_id),
        ]
        for ti in task_states(dag_id, run_id)
    ]
    headers = [
        *(
            "task_id",
            "state",
            "try",
            "nodename",
            "hostname",
            "started",
            "duration",
            "error",
        ),
        "waiting for",
    ]
    table(rows, headers)


@tasks.command("failed-deps")
@click.argument("dag_id")
@click.argument("task_id")
@click.argument("run_id")
def tasks_failed_deps(dag_id: str, task_id: str, run_id: str) -> None:
    """Why a task of a run is not queued yet: the dependencies it does not meet."""
    from flowsched.operations import failed_deps

    failed = failed_deps(dag_id, run_id, task_id)
    if not failed:
        click.echo("Task instance dependencies are all met.")
        return
    click.echo("Task instance dependencies not met:")
    for dep in failed:
        click.echo(f"{dep.name}: {dep.reason}")


register_celery_commands(cli)
register_web_commands(cli)
register_secret_commands(cli)


def main() -> None:
    cli(prog_name="flowsched")


if __name__ == "__main__":
    main()
