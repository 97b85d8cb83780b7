"""Params: JSON Schema checks when a run is made (CLI, API, page), and what templates see."""

from __future__ import annotations

from datetime import datetime

import pytest
from sqlalchemy import func, select

from flowsched import DAG, Param, operations
from flowsched.db.engine import session_scope
from flowsched.db.models import DagRun, XCom
from flowsched.exceptions import DagDefinitionError
from flowsched.params import ParamValidationError
from tests.harness import drive, parse, run_finished
from tests.test_cli import flowsched

PARAMS_DAG = """
from datetime import datetime
from flowsched import DAG, BashOperator, Param

with DAG("with_params", start_date=datetime(2026, 1, 1), params={
    "rows": Param(10, type="integer", minimum=1, maximum=100, title="Rows",
                  description="How many rows to load"),
    "mode": Param("full", enum=["full", "incremental"]),
    "dry": Param(False, type="boolean"),
    "tables": Param(["a"], type="array"),
    "note": "plain value",
}) as dag:
    BashOperator(task_id="show",
                 bash_command="echo {{ params.rows }}-{{ params.mode }}-{{ params.note }}")
"""


def runs(dag_id: str) -> int:
    with session_scope() as session:
        return session.scalar(select(func.count()).where(DagRun.dag_id == dag_id))


def shown(run_id: str) -> str:
    with session_scope() as session:
        return session.scalar(
            select(XCom.value).where(XCom.run_id == run_id, XCom.task_id == "show")
        )


def test_param_checks_its_schema_and_names_itself():
    rows = Param(10, type="integer", minimum=1)
    assert rows.resolve(name="rows") == 10
    assert rows.resolve(5, name="rows") == 5
    with pytest.raises(ParamValidationError, match="Invalid input for param 'rows': 0 is less"):
        rows.resolve(0, name="rows")
    with pytest.raises(ParamValidationError, match=r"param 'rows'.*'x' is not of type 'integer'"):
        rows.resolve("x", name="rows")
    with pytest.raises(ParamValidationError, match="param 'who': no value given"):
        Param(type="string").resolve(name="who")
    with pytest.raises(ParamValidationError, match=r"'c' is not one of \['a', 'b'\]"):
        Param("a", enum=["a", "b"]).resolve("c", name="pick")


def test_bad_defaults_and_required_params_on_scheduled_dags_fail_the_import(sqlite_home):
    with pytest.raises(DagDefinitionError, match="DAG 'd': default of Invalid input for param 'n'"):
        DAG("d", start_date=datetime(2026, 1, 1), params={"n": Param(-1, minimum=0)})
    with pytest.raises(DagDefinitionError, match="param 'who' has no default, so the DAG's"):
        DAG("d", schedule="@daily", start_date=datetime(2026, 1, 1), params={"who": Param()})
    dag = DAG("manual", start_date=datetime(2026, 1, 1), params={"who": Param(type="string")})
    assert dag.to_dict()["param_specs"] == {
        "who": {"description": None, "schema": {"type": "string"}}
    }


def test_trigger_validates_params_and_templates_see_conf_over_defaults(home):
    home.write_dag("with_params.py", PARAMS_DAG)
    parse()
    with pytest.raises(ParamValidationError, match="Invalid input for param 'rows': 500 is"):
        operations.trigger_dag("with_params", conf={"rows": 500})
    with pytest.raises(ParamValidationError, match="param 'mode'"):
        operations.trigger_dag("with_params", conf={"mode": "some"})
    assert runs("with_params") == 0  # a refused run is not created
    default = operations.trigger_dag("with_params")
    given = operations.trigger_dag("with_params", conf={"rows": 7, "note": "from conf"})
    drive(run_finished("with_params", given.run_id))
    drive(run_finished("with_params", default.run_id))
    assert shown(default.run_id) == "10-full-plain value"
    assert shown(given.run_id) == "7-full-from conf"  # dag_run.conf overrides params


def test_conf_does_not_override_params_when_the_option_is_off(home):
    home.configure(core={"dag_run_conf_overrides_params": "false"})
    home.write_dag("with_params.py", PARAMS_DAG)
    parse()
    run = operations.trigger_dag("with_params", conf={"rows": 7})
    drive(run_finished("with_params", run.run_id))
    assert shown(run.run_id) == "10-full-plain value"


def test_cli_refuses_bad_params_naming_them(home):
    home.write_dag("with_params.py", PARAMS_DAG)
    parse()
    refused = flowsched(
        home, "dags", "trigger", "with_params", "--conf", '{"rows": 0}', check=False
    )
    assert refused.returncode != 0
    assert "Invalid input for param 'rows': 0 is less than the minimum of 1" in refused.stderr
    assert runs("with_params") == 0
