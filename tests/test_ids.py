"""One id rule for DAG, task and run ids, enforced wherever a run is created, on both backends."""

from __future__ import annotations

import re

import pytest
from sqlalchemy import func, select

from flowsched import DAG, BashOperator
from flowsched.db.engine import session_scope
from flowsched.db.models import DagRun, TaskTry
from flowsched.exceptions import DagDefinitionError
from flowsched.ids import ID_MAX_LENGTH, InvalidId, id_problem
from flowsched.operations import backfill, trigger_dag
from flowsched.scheduler.runs import create_run
from flowsched.state import RunType
from flowsched.task_logs.client import fetch_task_log_tail
from flowsched.timezone import parse_datetime, utcnow
from tests.harness import drive, parse, run_finished
from tests.test_cli import flowsched

SIMPLE = """
from datetime import datetime
from flowsched import DAG, BashOperator

with DAG("simple", schedule="@daily", start_date=datetime(2026, 1, 1)) as dag:
    BashOperator(task_id="say", bash_command="echo said-{{ run_id }}")
"""

TRAVERSAL = "a/../../../../elsewhere"


def _runs() -> int:
    with session_scope() as session:
        return session.scalar(select(func.count()).select_from(DagRun)) or 0


@pytest.mark.parametrize(
    ("kind", "value", "message"),
    [
        ("run_id", TRAVERSAL, "it has '/'"),
        ("run_id", "x" * 300, "300 characters is too long"),
        ("run_id", "", "it is empty"),
        ("run_id", "ok\n", "it has '\\n'"),  # a trailing newline passed the old '$' regex
        ("run_id", "spaced id", "it has ' '"),
        ("dag_id", "a:b", "it has ':'"),
        ("task_id", "a+b", "it has '+'"),
        ("dag_id", "d" * 251, "251 characters is too long"),
        ("task_id", 7, "must be a string"),
    ],
)
def test_the_rule_names_the_bad_value_and_the_rule(kind, value, message):
    problem = id_problem(kind, value)
    assert problem is not None and message in problem, problem
    assert f"invalid {kind}" in problem and f"at most {ID_MAX_LENGTH} characters" in problem


def test_the_same_characters_and_length_for_dag_task_and_run_ids():
    for kind in ("dag_id", "task_id", "run_id"):
        assert id_problem(kind, "Az09_.-" + "x" * (ID_MAX_LENGTH - 7)) is None
        assert id_problem(kind, "x" * (ID_MAX_LENGTH + 1)) is not None
    # Generated run ids carry an ISO time, as Airflow's: ':' and '+' are allowed in run ids.
    assert id_problem("run_id", "manual__2026-01-01T00:00:00+00:00") is None
    with pytest.raises(DagDefinitionError, match="invalid dag_id 'bad/dag': it has '/'"):
        DAG("bad/dag")
    with pytest.raises(DagDefinitionError, match=r"invalid task_id 'yyy.*251 characters"):
        BashOperator(task_id="y" * 251, bash_command="true")


def test_every_way_to_create_a_run_refuses_a_bad_run_id(home):
    home.write_dag("simple.py", SIMPLE)
    parse()
    # operations.py (used by the web UI and the API)
    with pytest.raises(InvalidId, match=re.escape(f"invalid run_id '{TRAVERSAL}': it has '/'")):
        trigger_dag("simple", run_id=TRAVERSAL)
    # the scheduler's own path: create_run checks every id it is given
    with session_scope() as session, pytest.raises(InvalidId, match="301 characters"):
        create_run(
            session,
            "simple",
            run_type=RunType.MANUAL,
            logical_date=utcnow(),
            interval=None,
            now=utcnow(),
            run_id="y" * 301,
        )
    # the CLI
    result = flowsched(home, "dags", "trigger", "simple", "--run-id", "x" * 300, check=False)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "invalid run_id 'xxxx" in result.stderr and "300 characters is too long" in result.stderr
    assert "at most 250 characters" in result.stderr and "Traceback" not in result.stderr
    assert _runs() == 0
    assert not (home.root / "elsewhere").exists()
    # backfill makes its ids itself; they pass the same check
    created = backfill("simple", parse_datetime("2026-03-01"), parse_datetime("2026-03-02"))
    assert created and all(id_problem("run_id", run_id) is None for run_id in created)


def test_a_250_character_run_id_is_stored_whole_and_its_tasks_run_and_log(home):
    """250 is the limit on both backends, and such a run's log still has a valid file name."""
    home.write_dag("simple.py", SIMPLE)
    parse()
    with pytest.raises(InvalidId, match="251 characters is too long"):
        trigger_dag("simple", run_id="r" * 251)
    run_id = "manual__" + "r" * 242
    assert len(run_id) == ID_MAX_LENGTH
    trigger_dag("simple", run_id=run_id)
    drive(run_finished("simple", run_id))
    with session_scope() as session:
        attempt = session.scalar(select(TaskTry).where(TaskTry.run_id == run_id))
        assert attempt is not None and attempt.state == "success", attempt and attempt.error
        assert session.scalar(select(DagRun.run_id).where(DagRun.run_id == run_id)) == run_id
    tail = fetch_task_log_tail(attempt.hostname, "simple", run_id, "say", 1, limit=1 << 20)
    assert f"said-{run_id}" in tail.text()
    folders = [p.name for p in (home.logs / "dag_id=simple").glob("run_id=manual__*")]
    assert len(folders) == 1 and len(folders[0].encode()) <= 255
    assert folders[0].startswith("run_id=manual__rrr") and "#" in folders[0]
