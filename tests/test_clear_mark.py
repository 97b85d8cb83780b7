"""Clear and mark with upstream, downstream, past and future, as Airflow's (operations, CLI)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import select, update

from flowsched import operations
from flowsched.db.engine import session_scope
from flowsched.db.models import DagRun, TaskInstance
from flowsched.exceptions import FlowschedError
from flowsched.state import TaskState
from flowsched.timezone import utcnow
from tests.harness import parse
from tests.test_cli import flowsched

CHAIN = """
from datetime import datetime
from flowsched import DAG, BashOperator

with DAG("chain", start_date=datetime(2026, 1, 1)) as dag:
    a, b, c = (BashOperator(task_id=n, bash_command="true") for n in "abc")
    side = BashOperator(task_id="side", bash_command="true")
    a >> b >> c
"""
RUNS = ("r1", "r2", "r3")


def seed(home, state: str = "success") -> None:
    """Three runs of a >> b >> c (and an unrelated task), every task in ``state``."""
    home.write_dag("chain.py", CHAIN)
    parse()
    now = utcnow()
    for offset, run_id in enumerate(RUNS):
        run = operations.trigger_dag(
            "chain", run_id=run_id, logical_date=now - timedelta(days=3 - offset)
        )
        with session_scope() as session:
            session.execute(update(DagRun).where(DagRun.id == run.id).values(state=state))
            session.execute(
                update(TaskInstance)
                .where(TaskInstance.dag_run_id == run.id)
                .values(state=state, try_number=1)
            )


def states() -> dict[tuple[str, str], str]:
    with session_scope() as session:
        rows = session.execute(
            select(TaskInstance.run_id, TaskInstance.task_id, TaskInstance.state)
        ).all()
    return {(run_id, task_id): state for run_id, task_id, state in rows}


def cleared_by(home, **flags) -> set[tuple[str, str]]:
    result = operations.clear_tasks("chain", task_regex="^b$", run_id="r2", **flags)
    return set(result.cleared)


def test_clear_with_upstream_downstream_past_future(home):
    seed(home)
    assert cleared_by(home, dry_run=True, upstream=True) == {("r2", "a"), ("r2", "b")}
    assert set(states().values()) == {"success"}  # a dry run changes nothing
    assert cleared_by(home, dry_run=True, downstream=True, future=True) == {
        ("r2", "b"),
        ("r2", "c"),
        ("r3", "b"),
        ("r3", "c"),
    }
    assert cleared_by(home, dry_run=True, past=True) == {("r1", "b"), ("r2", "b")}
    assert cleared_by(home, dry_run=True, past=True, future=True) == {(run, "b") for run in RUNS}
    assert cleared_by(home, upstream=True, downstream=True) == {
        ("r2", "a"),
        ("r2", "b"),
        ("r2", "c"),
    }
    after = states()
    assert [after[("r2", t)] for t in ("a", "b", "c", "side")] == [
        "none",
        "none",
        "none",
        "success",
    ]
    assert after[("r1", "a")] == after[("r3", "c")] == "success"
    with pytest.raises(FlowschedError, match="past/future need a run"):
        operations.clear_tasks("chain", task_regex="^b$", past=True)


def test_mark_with_relatives_and_runs_changes_only_what_differs(home):
    seed(home, state="failed")
    would = operations.mark_tasks(
        "chain", "r2", "b", TaskState.SUCCESS, downstream=True, future=True, dry_run=True
    )
    assert set(would) == {("r2", "b"), ("r2", "c"), ("r3", "b"), ("r3", "c")}
    assert set(states().values()) == {"failed"}
    changed = operations.mark_tasks("chain", "r2", "b", TaskState.SUCCESS, upstream=True)
    assert set(changed) == {("r2", "a"), ("r2", "b")}
    again = operations.mark_tasks("chain", "r2", "b", TaskState.SUCCESS, upstream=True)
    assert again == []  # already success: nothing to change
    after = states()
    assert (after[("r2", "a")], after[("r2", "c")], after[("r1", "b")]) == (
        "success",
        "failed",
        "failed",
    )
    with session_scope() as session:
        run = session.scalar(select(DagRun).where(DagRun.run_id == "r2"))
        assert run.state == "running"  # a finished run is reopened, as before


def test_cli_clear_and_mark_take_the_same_flags(home):
    seed(home)
    dry = flowsched(
        home,
        "tasks",
        "clear",
        "chain",
        "--task",
        "^b$",
        "--run",
        "r2",
        "-u",
        "--future",
        "--dry-run",
    )
    assert "would clear 4 task instance(s)" in dry.stdout
    assert "r3  a" in dry.stdout and "r1" not in dry.stdout
    assert set(states().values()) == {"success"}
    # Airflow's order, as `tasks run`: DAG TASK RUN; swapped, it says so and marks nothing.
    swapped = flowsched(home, "tasks", "mark", "chain", "r2", "b", "failed", check=False)
    assert swapped.returncode != 0
    assert "look swapped; the order is DAG TASK RUN" in swapped.stderr, swapped.stderr
    assert set(states().values()) == {"success"}
    marked = flowsched(
        home, "tasks", "mark", "chain", "b", "r2", "failed", "--downstream", "--past"
    )
    assert "marked 4 task instance(s) failed" in marked.stdout
    after = states()
    assert {k for k, v in after.items() if v == "failed"} == {
        ("r1", "b"),
        ("r1", "c"),
        ("r2", "b"),
        ("r2", "c"),
    }
    refused = flowsched(home, "tasks", "clear", "chain", "--past", check=False)
    assert refused.returncode != 0 and "past/future need a run" in refused.stderr
