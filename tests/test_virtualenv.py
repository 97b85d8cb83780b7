"""@task.virtualenv / PythonVirtualenvOperator and @task.external_python, run by a real
scheduler and worker processes: the callable's source runs in another interpreter,
arguments and result cross as JSON, virtualenvs are cached by requirements."""

from __future__ import annotations

import sys

import pytest
from sqlalchemy import select

from flowsched import DAG, PythonVirtualenvOperator, operations, task
from flowsched.db.engine import session_scope
from flowsched.db.models import XCom
from flowsched.exceptions import DagDefinitionError
from tests.harness import drive, parse, run_state, ti_states, tries

VENV_DAG = """
from datetime import datetime
from flowsched import DAG, task

with DAG("isolated", start_date=datetime(2026, 1, 1)) as dag:
    @task.virtualenv(system_site_packages=False)
    def bare(numbers, scale=1):
        import sys
        try:
            import flowsched  # noqa: F401
            reachable = True
        except ImportError:
            reachable = False
        return {{"total": sum(numbers) * scale, "prefix": sys.prefix, "flowsched": reachable}}

    @task.virtualenv(requirements=["six==1.16.0"], system_site_packages=False)
    def with_six(data):
        import six
        return [six.__version__, data["total"]]

    @task.external_python(python="{python}")
    def outside(word):
        import sys
        return f"{{word}} from {{sys.executable}}"

    with_six(bare([1, 2, 3], scale=2))
    outside("hi")
"""


def _xcoms(run_id: str) -> dict[str, object]:
    with session_scope() as session:
        return dict(
            session.execute(
                select(XCom.task_id, XCom.value).where(
                    XCom.run_id == run_id, XCom.key == "return_value"
                )
            ).all()
        )


def test_callables_run_in_a_cached_virtualenv_and_an_external_python(home):
    home.write_dag("isolated.py", VENV_DAG.format(python="/usr/bin/python3"))
    parse()
    first = operations.trigger_dag("isolated")
    drive(lambda: run_state("isolated", first.run_id) in ("success", "failed"), timeout=180)
    assert ti_states("isolated", first.run_id) == {
        "bare": ("success", 1),
        "with_six": ("success", 1),
        "outside": ("success", 1),
    }, [t.error for t in tries("isolated", "with_six")]
    values = _xcoms(first.run_id)
    assert values["bare"]["total"] == 12
    assert values["bare"]["flowsched"] is False  # no system site packages, no flowsched
    assert values["bare"]["prefix"].startswith(str(home.root / "venvs"))
    assert values["with_six"] == ["1.16.0", 12]
    assert values["outside"] == "hi from /usr/bin/python3"

    venvs = sorted(p for p in (home.root / "venvs").iterdir() if p.is_dir())
    assert len(venvs) == 2
    markers = {p: (p / "install_complete_marker.json").stat().st_mtime_ns for p in venvs}
    second = operations.trigger_dag("isolated")
    drive(lambda: run_state("isolated", second.run_id) in ("success", "failed"), timeout=120)
    assert run_state("isolated", second.run_id) == "success"
    # Reused, not rebuilt: same folders, same markers.
    assert {p: (p / "install_complete_marker.json").stat().st_mtime_ns for p in venvs} == markers
    assert sorted(p for p in (home.root / "venvs").iterdir() if p.is_dir()) == venvs


def test_bad_callables_and_interpreters_are_clear_errors():
    with DAG("bad_venv"):
        with pytest.raises(DagDefinitionError, match="must be a plain `def` function"):
            PythonVirtualenvOperator(task_id="lam", python_callable=lambda: 1)

        @task.external_python(python="/nonexistent/python")
        def nowhere():
            return 1

        operator = nowhere().operator
    with pytest.raises(Exception, match="'/nonexistent/python' is not an executable file"):
        operator.execute({"ti": None})
    assert sys.executable  # the test interpreter is what the venvs are built from
