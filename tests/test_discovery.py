"""DAG discovery: isolation, import errors, ignore files, fingerprints and versions."""

from __future__ import annotations

import hashlib

from sqlalchemy import select

from flowsched.dag_processor import process_folder
from flowsched.db.engine import session_scope
from flowsched.db.models import Dag, DagVersion, ImportError_
from flowsched.discovery import list_dag_files

GOOD = """
from datetime import datetime
from flowsched import DAG, BashOperator
with DAG("{dag_id}", start_date=datetime(2026, 1, 1)) as dag:
    BashOperator(task_id="t", bash_command="echo {message}")
"""


def errors() -> dict[str, str]:
    with session_scope() as session:
        return {e.filename: e.traceback for e in session.scalars(select(ImportError_))}


def dag_ids() -> set[str]:
    with session_scope() as session:
        return set(session.scalars(select(Dag.dag_id).where(Dag.is_active.is_(True))))


def test_broken_files_are_recorded_and_never_stop_the_others(home):
    home.write_dag("good.py", GOOD.format(dag_id="good", message="hi"))
    home.write_dag("syntax.py", "def broken(:\n")
    home.write_dag("raises.py", "raise RuntimeError('no database for you')\n")
    home.write_dag("hangs.py", "import time\nwhile True:\n    time.sleep(1)\n")
    home.write_dag(
        "cycle.py",
        """
from datetime import datetime
from flowsched import DAG, BashOperator
with DAG("cyclic", start_date=datetime(2026, 1, 1)) as dag:
    a = BashOperator(task_id="a", bash_command="true")
    b = BashOperator(task_id="b", bash_command="true")
    a >> b >> a
""",
    )
    home.write_dag(
        "badcron.py",
        """
from datetime import datetime
from flowsched import DAG
DAG("badcron", schedule="99 * * * *", start_date=datetime(2026, 1, 1))
""",
    )
    home.configure(core={"dagbag_import_timeout": "2"})
    report = process_folder()
    assert report.files == 6 and report.dags == 1
    assert dag_ids() == {"good"}
    found = errors()
    assert set(found) == {"syntax.py", "raises.py", "hangs.py", "cycle.py", "badcron.py"}
    assert "SyntaxError" in found["syntax.py"] and "line 1" in found["syntax.py"]
    assert "RuntimeError: no database for you" in found["raises.py"]
    assert "timed out after 2 s" in found["hangs.py"]
    assert "cycle.py: DAG 'cyclic' has a cycle: a -> b -> a" in found["cycle.py"]
    assert "DAG 'badcron': invalid cron expression '99 * * * *'" in found["badcron.py"]


def test_fixing_a_file_clears_its_error(home):
    home.write_dag("flip.py", "raise ValueError('broken')\n")
    process_folder()
    assert "flip.py" in errors()
    home.write_dag("flip.py", GOOD.format(dag_id="flip", message="fixed"))
    process_folder()
    assert errors() == {} and dag_ids() == {"flip"}


def test_flowschedignore_and_subfolders(home):
    home.write_dag("team_a/one.py", GOOD.format(dag_id="one", message="1"))
    home.write_dag("team_a/scratch_two.py", GOOD.format(dag_id="two", message="2"))
    home.write_dag("vendor/lib.py", "raise SystemExit('must not be imported')\n")
    home.write_dag("three.py", GOOD.format(dag_id="three", message="3"))
    (home.dags / ".flowschedignore").write_text("# comment\nvendor/\n")
    (home.dags / "team_a" / ".flowschedignore").write_text("scratch_*\n")
    names = sorted(p.relative_to(home.dags).as_posix() for p in list_dag_files(home.dags))
    assert names == ["team_a/one.py", "three.py"]
    process_folder()
    assert dag_ids() == {"one", "three"} and errors() == {}


def test_fingerprint_is_sha256_and_new_version_only_on_change(home):
    path = home.write_dag("versioned.py", GOOD.format(dag_id="versioned", message="v1"))
    process_folder()
    process_folder()  # unchanged: no new version
    path.write_text(GOOD.format(dag_id="versioned", message="v2"))
    process_folder()
    with session_scope() as session:
        versions = session.scalars(
            select(DagVersion)
            .where(DagVersion.dag_id == "versioned")
            .order_by(DagVersion.version_number)
        ).all()
        latest_id = session.get(Dag, "versioned").latest_version_id
    assert [v.version_number for v in versions] == [1, 2]
    assert versions[1].fingerprint == hashlib.sha256(path.read_bytes()).hexdigest()
    assert "echo v2" in versions[1].source and "echo v1" in versions[0].source
    assert latest_id == versions[1].id


def test_duplicate_dag_id_across_files_is_an_error_for_the_second(home):
    home.write_dag("a_first.py", GOOD.format(dag_id="same", message="a"))
    home.write_dag("b_second.py", GOOD.format(dag_id="same", message="b"))
    process_folder()
    found = errors()
    assert list(found) == ["b_second.py"]
    assert "already defined in a_first.py" in found["b_second.py"]


def test_removed_file_deactivates_dag(home):
    path = home.write_dag("gone.py", GOOD.format(dag_id="gone", message="x"))
    process_folder()
    path.unlink()
    process_folder()
    with session_scope() as session:
        assert session.get(Dag, "gone").is_active is False


def test_dags_folder_symlink_swap_is_followed(home, tmp_path):
    release_a = tmp_path / "releases" / "a"
    release_b = tmp_path / "releases" / "b"
    for release, dag_id in ((release_a, "from_a"), (release_b, "from_b")):
        release.mkdir(parents=True)
        (release / "dag.py").write_text(GOOD.format(dag_id=dag_id, message=dag_id))
    current = tmp_path / "current"
    current.symlink_to(release_a)
    home.configure(core={"dags_folder": str(current)})
    process_folder()
    assert dag_ids() == {"from_a"}
    tmp_link = tmp_path / "current.tmp"
    tmp_link.symlink_to(release_b)
    tmp_link.replace(current)  # atomic swap, as the dag_sync role does
    process_folder()
    assert dag_ids() == {"from_b"}


def test_celery_warns_about_tasks_longer_than_the_visibility_timeout(home, caplog):
    home.configure(
        core={"executor": "celery", "secret_key": "discovery-test-secret-7c1e9a3f5b2d8e4a6c0f"},
        celery={"visibility_timeout": "60"},
    )
    home.write_dag(
        "long.py",
        """
from datetime import datetime, timedelta
from flowsched import DAG, BashOperator
with DAG("long", start_date=datetime(2026, 1, 1)) as dag:
    BashOperator(task_id="slow", bash_command="true", execution_timeout=timedelta(minutes=5))
    BashOperator(task_id="fast", bash_command="true", execution_timeout=timedelta(seconds=30))
""",
    )
    with caplog.at_level("WARNING", logger="flowsched.dag_processor"):
        process_folder()
    warnings = [r.getMessage() for r in caplog.records if "visibility_timeout" in r.getMessage()]
    assert len(warnings) == 1 and warnings[0].startswith("long.slow: execution_timeout 0:05:00")
