"""A schedule flowsched cannot serialize is an import error naming the file and the type.

Before, a timetable object or a Schedule subclass was stored as "no schedule",
silently making the DAG manual-only.
"""

from __future__ import annotations

from datetime import datetime

import pytest
from sqlalchemy import select

from flowsched import DAG
from flowsched.dag_processor import process_folder
from flowsched.db.engine import session_scope
from flowsched.db.models import Dag, ImportError_
from flowsched.exceptions import DagDefinitionError
from flowsched.schedules import CronSchedule, Schedule

TIMETABLE = """
from datetime import datetime
from flowsched import DAG, BashOperator

class WorkdayTimetable:
    def next_dagrun_info(self, *args, **kwargs):
        return None

with DAG("custom", schedule=WorkdayTimetable(), start_date=datetime(2026, 1, 1)):
    BashOperator(task_id="t", bash_command="true")
"""


def import_errors() -> dict[str, str]:
    with session_scope() as session:
        return {e.filename: e.traceback for e in session.scalars(select(ImportError_))}


def test_a_timetable_object_is_an_import_error_naming_file_and_type(home):
    home.write_dag("custom_timetable.py", TIMETABLE)
    report = process_folder()
    assert len(report.errors) == 1
    errors = import_errors()
    [(filename, message)] = errors.items()
    assert filename.endswith("custom_timetable.py")
    assert "DAG 'custom': schedule of type WorkdayTimetable is not supported" in message
    with session_scope() as session:
        assert session.get(Dag, "custom") is None  # not stored as a manual-only DAG


@pytest.mark.parametrize(
    ("schedule", "named"),
    [
        (42, r"int \(42\)"),
        (["dataset://orders"], r"list \(\['dataset://orders'\]\)"),
        (object(), "object"),
    ],
)
def test_unknown_schedule_types_are_refused_by_type(sqlite_home, schedule, named):
    with pytest.raises(DagDefinitionError, match=rf"DAG 'd': schedule of type {named} is not"):
        DAG("d", schedule=schedule, start_date=datetime(2026, 1, 1))


def test_a_schedule_subclass_is_refused_but_built_in_schedules_are_accepted(sqlite_home):
    class Weekdays(CronSchedule):
        pass

    with pytest.raises(DagDefinitionError, match=r"schedule of type .*Weekdays is not supported"):
        DAG("d", schedule=Weekdays("0 8 * * 1-5", None), start_date=datetime(2026, 1, 1))
    dag = DAG("ok", schedule=Schedule(), start_date=datetime(2026, 1, 1))
    assert dag.schedule.kind == "none"
