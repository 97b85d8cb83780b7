"""The flowsched command, run as a real process against SQLite and MariaDB."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from sqlalchemy import func, select

from flowsched import operations
from flowsched.db.engine import session_scope
from flowsched.db.models import AuditLog, Dag, DagRun, DagVersion, TaskInstance, TaskTry, XCom
from tests.harness import drive, parse, run_finished, ti_states
from tests.test_scheduler import FLAKY, PIPELINE


def flowsched(home, *args: str, check: bool = True, env: dict | None = None):
    result = subprocess.run(
        [sys.executable, "-m", "flowsched", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **home.env, **(env or {})},
    )
    if check and result.returncode != 0:
        raise AssertionError(f"flowsched {' '.join(args)} failed:\n{result.stdout}{result.stderr}")
    return result


def count(model, dag_id: str) -> int:
    with session_scope() as session:
        return session.scalar(select(func.count()).select_from(model).where(model.dag_id == dag_id))


def test_db_upgrade_and_check(home):
    assert "nothing to do" in flowsched(home, "db", "upgrade").stdout
    out = flowsched(home, "db", "check").stdout
    assert "ok" in out and ("sqlite" in out or "mysql" in out)


def test_dags_list_show_trigger_pause(home):
    home.write_dag("pipeline.py", PIPELINE)
    parse()
    listing = flowsched(home, "dags", "list").stdout
    assert "pipeline" in listing and "pipeline.py" in listing
    shown = flowsched(home, "dags", "show", "pipeline").stdout
    assert (
        "sha256:" in shown and "total [PythonOperator, all_success, retries=0] <- extract" in shown
    )
    out = flowsched(home, "dags", "trigger", "pipeline", "--conf", '{"a": 1}', "--run-id", "r1")
    assert "created run r1" in out.stdout
    with session_scope() as session:
        run = session.scalar(select(DagRun).where(DagRun.run_id == "r1"))
        assert run.conf == {"a": 1} and run.run_type == "manual"
    flowsched(home, "dags", "pause", "pipeline")
    with session_scope() as session:
        assert session.get(Dag, "pipeline").is_paused
    flowsched(home, "dags", "unpause", "pipeline")
    with session_scope() as session:
        assert not session.get(Dag, "pipeline").is_paused


def test_bad_input_gets_one_clear_line(home):
    home.write_dag("pipeline.py", PIPELINE)
    parse()
    bad_conf = flowsched(home, "dags", "trigger", "pipeline", "--conf", "{nope", check=False)
    assert bad_conf.returncode == 2 and "not valid JSON" in bad_conf.stderr
    missing = flowsched(home, "dags", "trigger", "nosuchdag", check=False)
    assert missing.returncode == 1 and "error: no DAG 'nosuchdag'" in missing.stderr
    assert "Traceback" not in missing.stderr
    bad_key = flowsched(
        home, "dags", "list", check=False, env={"FLOWSCHED__SCHEDULER__LOOP_INTERVALL": "1"}
    )
    assert bad_key.returncode == 1 and "unknown key 'loop_intervall'" in bad_key.stderr
    assert "did you mean 'loop_interval'" in bad_key.stderr


def test_tasks_states_log_and_foreground_run(home):
    home.write_dag("pipeline.py", PIPELINE)
    parse()
    run = operations.trigger_dag("pipeline", run_id="r2")
    drive(run_finished("pipeline"))
    states = flowsched(home, "tasks", "states", "pipeline", run.run_id).stdout
    assert states.count("success") == 3 and "+08:00" in states
    log = flowsched(home, "tasks", "log", "pipeline", "report", "r2").stdout
    assert "total=6" in log
    # Re-run one task in the foreground: its try number goes up, output is shown.
    out = flowsched(home, "tasks", "run", "pipeline", "report", "r2")
    assert "total=6" in out.stdout and "try 2: success" in out.stdout
    assert ti_states("pipeline", "r2")["report"] == ("success", 2)


def test_tasks_clear_from_cli(home):
    marker = home.root / "marker"
    home.write_dag(
        "flaky.py",
        FLAKY.format(
            marker=str(marker), counter=home.root / "c", attempts=home.root / "a", retries=0
        ),
    )
    parse()
    operations.trigger_dag("flaky", run_id="r3")
    drive(run_finished("flaky"))
    out = flowsched(
        home, "tasks", "clear", "flaky", "--run", "r3", "--only-failed", "--downstream"
    ).stdout
    assert "cleared 2 task instance(s)" in out
    assert ti_states("flaky", "r3")["flaky"] == ("none", 1)
    assert ti_states("flaky", "r3")["first"] == ("success", 1)
    bad = flowsched(home, "tasks", "clear", "flaky", "--task", "(", check=False)
    assert bad.returncode == 1 and "bad --task regex" in bad.stderr


def test_backfill_creates_one_run_per_interval(home):
    home.write_dag(
        "daily.py",
        """
from datetime import datetime
from flowsched import DAG, BashOperator
with DAG("daily", schedule="@daily", start_date=datetime(2026, 1, 1)) as dag:
    BashOperator(task_id="t", bash_command="echo {{ ds }}")
""",
    )
    parse()
    out = flowsched(home, "dags", "backfill", "daily", "-s", "2026-03-01", "-e", "2026-03-03")
    assert "created 3 backfill run(s)" in out.stdout
    again = flowsched(home, "dags", "backfill", "daily", "-s", "2026-03-01", "-e", "2026-03-03")
    assert "created 0 backfill run(s)" in again.stdout

    def all_done() -> bool:
        with session_scope() as session:
            runs = session.scalars(select(DagRun).where(DagRun.run_type == "backfill")).all()
            return len(runs) == 3 and all(r.state == "success" for r in runs)

    drive(all_done)
    log = (home.logs / "dag_id=daily").glob("run_id=backfill__*/task_id=t/attempt=1.log")
    assert sorted(p.read_text().splitlines()[1] for p in log) == [
        "2026-03-01",
        "2026-03-02",
        "2026-03-03",
    ]


def test_dags_delete_removes_everything_in_one_go(home):
    home.write_dag("pipeline.py", PIPELINE)
    parse()
    operations.trigger_dag("pipeline", run_id="r4")
    drive(run_finished("pipeline"))
    operations.set_paused("pipeline", True)
    assert count(TaskTry, "pipeline") == 3 and count(XCom, "pipeline") == 3
    out = flowsched(home, "dags", "delete", "pipeline", "--yes").stdout
    assert "task_instance: 3" in out and "dag_run: 1" in out and "xcom: 3" in out
    for model in (Dag, DagRun, TaskInstance, TaskTry, XCom, DagVersion, AuditLog):
        assert count(model, "pipeline") == 0, model.__tablename__
    missing = flowsched(home, "dags", "delete", "pipeline", "--yes", check=False)
    assert "no DAG 'pipeline'" in missing.stderr


def test_dags_delete_refuses_while_running_unless_forced(home):
    home.write_dag("pipeline.py", PIPELINE)
    parse()
    operations.trigger_dag("pipeline")
    with session_scope() as session:
        session.execute(DagRun.__table__.update().values(state="running"))
    refused = flowsched(home, "dags", "delete", "pipeline", "--yes", check=False)
    assert refused.returncode == 1 and "queued or running run(s)" in refused.stderr
    assert count(DagRun, "pipeline") == 1
    flowsched(home, "dags", "delete", "pipeline", "--yes", "--force")
    assert count(DagRun, "pipeline") == 0


@pytest.mark.parametrize(
    "command", [["version"], ["config", "show"], ["config", "show", "--defaults"]]
)
def test_informational_commands(sqlite_home, command):
    out = flowsched(sqlite_home, *command).stdout
    assert out.strip()
    if command == ["config", "show"]:
        assert "default_timezone = Etc/GMT-8" in out and "secret_key" in out


def test_pools_cli(home):
    flowsched(home, "pools", "set", "gpu", "3", "--description", "the GPU box")
    flowsched(home, "pools", "set", "gpu", "5")
    listing = flowsched(home, "pools", "list").stdout
    assert "gpu" in listing and " 5 " in listing and "the GPU box" in listing
    assert "default_pool" in listing
    refused = flowsched(home, "pools", "delete", "default_pool", check=False)
    assert refused.returncode == 1 and "cannot be deleted" in refused.stderr
    negative = flowsched(home, "pools", "set", "gpu", "--", "-1", check=False)
    assert negative.returncode == 1 and "slots must be >= 0" in negative.stderr
    flowsched(home, "pools", "delete", "gpu")
    assert "gpu" not in flowsched(home, "pools", "list").stdout
