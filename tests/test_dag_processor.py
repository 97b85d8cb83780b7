"""The DAG processor's passes: only changed files are imported again, in warm children."""

from __future__ import annotations

import os

from sqlalchemy import delete, select

from flowsched.dag_processor import ParseCache, process_folder
from flowsched.db.engine import session_scope
from flowsched.db.models import Dag, DagVersion, ImportError_

GOOD = """
from datetime import datetime
from flowsched import DAG, BashOperator
with DAG("{dag_id}", start_date=datetime(2026, 1, 1)) as dag:
    BashOperator(task_id="t", bash_command="echo {message}")
"""

# Says which process imported it (a DAG's description is stored with the DAG).
WHO = """
import os
from datetime import datetime
from flowsched import DAG
DAG("{dag_id}", description=str(os.getpid()), start_date=datetime(2026, 1, 1))
"""


def versions() -> dict[str, int]:
    with session_scope() as session:
        rows = session.execute(select(DagVersion.dag_id, DagVersion.version_number)).all()
    found: dict[str, int] = {}
    for dag_id, number in rows:
        found[dag_id] = max(found.get(dag_id, 0), number)
    return found


def active() -> set[str]:
    with session_scope() as session:
        return set(session.scalars(select(Dag.dag_id).where(Dag.is_active.is_(True))))


def errors() -> dict[str, str]:
    with session_scope() as session:
        return {e.filename: e.traceback for e in session.scalars(select(ImportError_))}


def test_a_pass_imports_only_the_files_that_changed(sqlite_home):
    for n in range(3):
        sqlite_home.write_dag(f"d{n}.py", GOOD.format(dag_id=f"d{n}", message=n))
    cache = ParseCache()
    first = process_folder(cache=cache)
    assert (first.files, first.listed, first.dags) == (3, 3, 3)
    again = process_folder(cache=cache)
    assert (again.files, again.listed, again.dags, again.new_versions) == (0, 3, 3, [])
    sqlite_home.write_dag("d1.py", GOOD.format(dag_id="d1", message="edited, and longer"))
    edited = process_folder(cache=cache)
    assert edited.imported == ["d1.py"] and edited.new_versions == ["d1 v2"]
    assert versions() == {"d0": 1, "d1": 2, "d2": 1} and active() == {"d0", "d1", "d2"}


def test_removed_broken_and_duplicate_files_with_the_cache(sqlite_home):
    sqlite_home.write_dag("a.py", GOOD.format(dag_id="a", message=1))
    sqlite_home.write_dag("b.py", GOOD.format(dag_id="b", message=2))
    cache = ParseCache()
    process_folder(cache=cache)
    (sqlite_home.dags / "b.py").unlink()
    sqlite_home.write_dag("c.py", "raise ValueError('broken')\n")
    report = process_folder(cache=cache)
    assert report.imported == ["c.py"]
    assert active() == {"a"} and set(errors()) == {"c.py"}
    # A second file defining "a", listed after a.py: an error of its own, a.py keeps "a".
    sqlite_home.write_dag("d.py", GOOD.format(dag_id="a", message="again"))
    report = process_folder(cache=cache)
    assert set(errors()) == {"c.py", "d.py"} and "already defined in a.py" in errors()["d.py"]
    assert versions()["a"] == 1  # no new version of "a" from d.py
    # Unchanged files, unchanged errors: nothing is imported, the errors stay as they were.
    report = process_folder(cache=cache)
    assert report.files == 0 and set(errors()) == {"c.py", "d.py"}
    sqlite_home.write_dag("c.py", GOOD.format(dag_id="c", message="fixed now"))
    process_folder(cache=cache)
    assert set(errors()) == {"d.py"} and active() == {"a", "c"}


def test_a_dag_missing_from_the_database_is_written_again_without_a_change(sqlite_home):
    sqlite_home.write_dag("a.py", GOOD.format(dag_id="a", message=1))
    cache = ParseCache()
    process_folder(cache=cache)
    with session_scope() as session:
        session.execute(delete(Dag).where(Dag.dag_id == "a"))
    report = process_folder(cache=cache)
    assert report.files == 0 and active() == {"a"}


def test_unchanged_files_are_imported_again_after_min_file_process_interval(sqlite_home):
    for n in range(3):
        sqlite_home.write_dag(f"d{n}.py", GOOD.format(dag_id=f"d{n}", message=n))
    cache = ParseCache(refresh_per_pass=2)
    process_folder(cache=cache)
    sqlite_home.configure(scheduler={"min_file_process_interval": "0.001"})
    refreshed = process_folder(cache=cache)
    assert len(refreshed.imported) == 2 and refreshed.new_versions == []
    # The one left out is among the next pass's (the oldest imports go first).
    left = {"d0.py", "d1.py", "d2.py"} - set(refreshed.imported)
    assert left <= set(process_folder(cache=cache).imported)


def test_one_warm_child_imports_many_files_and_a_forking_file_gets_a_fresh_one(sqlite_home):
    sqlite_home.configure(scheduler={"parsing_processes": "1"})
    sqlite_home.write_dag("a.py", WHO.format(dag_id="a"))
    sqlite_home.write_dag("b.py", WHO.format(dag_id="b"))
    sqlite_home.write_dag(
        "c.py",
        "import os\nif os.fork() == 0:\n    os._exit(0)\n" + WHO.format(dag_id="c"),
    )
    sqlite_home.write_dag("d.py", WHO.format(dag_id="d"))
    report = process_folder()
    assert report.errors == [] and report.dags == 4
    with session_scope() as session:
        pids = dict(session.execute(select(Dag.dag_id, Dag.description)).all())
    assert pids["a"] == pids["b"] == pids["c"], pids  # one child, in turn
    assert pids["d"] != pids["c"], pids  # c.py forked: its child was ended after it
    assert str(os.getpid()) not in pids.values()  # never imported in this process
