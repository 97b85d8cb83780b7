"""A try that fails before its task code runs records the real reason where people look.

Before, a try whose log could not be opened died with exit code 1 and the try
said only "exited with code 1 before recording a result"; the real OSError
was on the scheduler's stderr. Now the try is claimed and finished with the
reason, shown by ``flowsched tasks states``, the API and the task page.
"""

from __future__ import annotations

import os

from sqlalchemy import insert, select

from flowsched.db.engine import session_scope
from flowsched.db.models import DagRun, DagVersion, TaskInstance
from flowsched.operations import trigger_dag
from flowsched.task_logs.files import relative_log_path
from flowsched.timezone import utcnow
from flowsched.web.app import create_app
from flowsched.web.users import create_token, create_user
from tests.harness import drive, parse, run_finished, ti_states, tries
from tests.test_cli import flowsched

DAG_FILE = """
from datetime import datetime
from flowsched import DAG, BashOperator

with DAG("fragile_logs", schedule=None, start_date=datetime(2026, 1, 1)) as dag:
    BashOperator(task_id="t", bash_command="echo ran > {marker}")
"""


def _setup(home) -> None:
    home.write_dag("fragile_logs.py", DAG_FILE.format(marker=home.root / "ran.marker"))
    parse()


def _shown_everywhere(home, run_id: str, words: list[str]) -> None:
    """The try's error holds ``words`` in the DB, `tasks states`, the API and the page."""
    [attempt] = tries("fragile_logs", "t")
    assert attempt.state == "failed"
    assert all(word in (attempt.error or "") for word in words), attempt.error
    assert "exited with code" not in attempt.error
    assert not (home.root / "ran.marker").exists(), "the task code must not have run"

    states = flowsched(home, "tasks", "states", "fragile_logs", run_id).stdout
    assert "failed" in states and all(word in states for word in words), states

    create_user("viewer", "viewer-password-1", "viewer")
    token = create_token("viewer", "tests")
    client = create_app(secret_key="test").test_client()
    answer = client.get(
        f"/api/v1/dags/fragile_logs/runs/{run_id}/tasks/t",
        headers={"Authorization": f"Bearer {token}"},
    ).get_json()
    assert all(word in answer["tries"][0]["error"] for word in words), answer
    page_client = create_app(secret_key="test").test_client()
    from tests.web.conftest import login

    assert login(page_client, "viewer", "viewer-password-1").status_code == 302
    page = page_client.get(f"/dags/fragile_logs/runs/{run_id}/tasks/t").text
    assert words[0] in page


def test_a_log_folder_that_cannot_be_written_fails_the_try_with_the_reason(home):
    _setup(home)
    # A file where the DAG's log folder should be: mkdir fails (as on a read-only disk).
    (home.logs / "dag_id=fragile_logs").write_text("in the way")
    run = trigger_dag("fragile_logs", run_id="blocked")
    drive(run_finished("fragile_logs", "blocked"))
    assert ti_states("fragile_logs", "blocked")["t"] == ("failed", 1)
    _shown_everywhere(home, run.run_id, ["cannot write the log of this try", "NotADirectoryError"])


def test_a_log_that_is_a_symlink_is_not_written_through(home):
    _setup(home)
    target = home.root / "precious.txt"
    target.write_text("keep me")
    log = home.logs / relative_log_path("fragile_logs", "linked", "t", 1)
    log.parent.mkdir(parents=True)
    log.symlink_to(target)
    trigger_dag("fragile_logs", run_id="linked")
    drive(run_finished("fragile_logs", "linked"))
    assert target.read_text() == "keep me"
    _shown_everywhere(home, "linked", ["LogRefused", "outside the log folder"])


def test_a_run_id_from_before_validation_cannot_write_outside_the_log_folder(home):
    """Rows written by an older version (no id check) still cannot lead a log out."""
    _setup(home)
    evil = "a/../../../../elsewhere"
    with session_scope() as session:
        version = session.scalar(select(DagVersion).where(DagVersion.dag_id == "fragile_logs"))
        now = utcnow()
        run_pk = session.execute(
            insert(DagRun).values(
                dag_id="fragile_logs",
                run_id=evil,
                run_type="manual",
                state="queued",
                logical_date=now,
                data_interval_start=now,
                data_interval_end=now,
                conf={},
                dag_version_id=version.id,
                created_at=now,
            )
        ).inserted_primary_key[0]
        session.execute(
            insert(TaskInstance).values(
                dag_run_id=run_pk,
                dag_id="fragile_logs",
                run_id=evil,
                task_id="t",
                state="none",
                try_number=0,
                max_tries=0,
                operator="BashOperator",
                pool="default_pool",
                priority_weight=1,
            )
        )
    before = set(os.listdir(home.root.parent))
    drive(run_finished("fragile_logs", evil))
    [attempt] = tries("fragile_logs", "t")
    assert attempt.state == "failed" and "outside the log folder" in attempt.error, attempt.error
    assert set(os.listdir(home.root.parent)) == before
    assert not any(home.root.parent.rglob("elsewhere*"))


IMPORT_FAILS_ON_WORKER = """
from datetime import datetime
from pathlib import Path
from flowsched import DAG, BashOperator

if Path({broken!r}).exists():
    raise RuntimeError("cannot import: the broken marker is present")

with DAG("fragile_logs", schedule=None, start_date=datetime(2026, 1, 1)) as dag:
    BashOperator(task_id="t", bash_command="echo ran > {marker}")
"""


def test_a_dag_file_that_fails_to_import_in_the_try_records_the_exception(home):
    broken = home.root / "broken"
    home.write_dag(
        "fragile_logs.py",
        IMPORT_FAILS_ON_WORKER.format(broken=str(broken), marker=home.root / "ran.marker"),
    )
    parse()
    broken.touch()  # same file, same sha256: only the try's own import fails
    trigger_dag("fragile_logs", run_id="unimportable")
    drive(run_finished("fragile_logs", "unimportable"))
    _shown_everywhere(
        home, "unimportable", ["RuntimeError: cannot import: the broken marker is present"]
    )
