"""Airflow 2.10's own example DAGs, with only their imports changed, run on flowsched.

The DAG files are read from the apache-airflow 2.10.5 wheel (fetched with pip,
no dependencies, never installed), so what runs is Airflow's text, not a copy of
it; the only change is each ``from airflow... import`` line, mapped by the table
below (the same table as docs/airflow-migration.md). The states asserted are
the ones Airflow gives these DAGs.
"""

from __future__ import annotations

import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from sqlalchemy import select

from flowsched import operations
from flowsched.db.engine import session_scope
from flowsched.db.models import DagRun, XCom
from tests.harness import drive, parse, run_finished, run_state, ti_states

AIRFLOW_VERSION = "2.10.5"

# Airflow module -> the flowsched module that has the same names.
IMPORTS = {
    "airflow": "flowsched",
    "airflow.models": "flowsched",
    "airflow.models.dag": "flowsched",
    "airflow.models.baseoperator": "flowsched",
    "airflow.models.xcom_arg": "flowsched.xcom_arg",
    "airflow.decorators": "flowsched.decorators",
    "airflow.exceptions": "flowsched.exceptions",
    "airflow.operators.bash": "flowsched.operators.bash",
    "airflow.operators.datetime": "flowsched.operators.datetime",
    "airflow.operators.weekday": "flowsched.operators.weekday",
    "airflow.utils.weekday": "flowsched.weekday",
    "airflow.operators.branch": "flowsched.operators.branch",
    "airflow.operators.empty": "flowsched.operators.empty",
    "airflow.operators.latest_only": "flowsched.operators.latest_only",
    "airflow.operators.python": "flowsched.operators.python",
    "airflow.operators.trigger_dagrun": "flowsched.operators.trigger_dagrun",
    "airflow.sensors.base": "flowsched.sensors.base",
    "airflow.sensors.bash": "flowsched.sensors.bash",
    "airflow.sensors.date_time": "flowsched.sensors.date_time",
    "airflow.sensors.external_task": "flowsched.sensors.external_task",
    "airflow.sensors.filesystem": "flowsched.sensors.filesystem",
    "airflow.sensors.python": "flowsched.sensors.python",
    "airflow.sensors.time_delta": "flowsched.sensors.time_delta",
    "airflow.utils.context": "flowsched.context",
    "airflow.utils.edgemodifier": "flowsched.edgemodifier",
    "airflow.utils.helpers": "flowsched.chain",
    "airflow.utils.trigger_rule": "flowsched.state",
    "airflow.utils.task_group": "flowsched.utils.task_group",
}
IMPORT_LINE = re.compile(r"^(\s*from\s+)(airflow(?:\.[\w.]+)?)(\s+import\b)", re.MULTILINE)


def port(source: str, name: str) -> str:
    def replace(match: re.Match[str]) -> str:
        module = match.group(2)
        if module not in IMPORTS:
            raise AssertionError(f"{name}: no flowsched equivalent listed for {module}")
        return f"{match.group(1)}{IMPORTS[module]}{match.group(3)}"

    ported = IMPORT_LINE.sub(replace, source)
    assert "import airflow" not in ported and "from airflow" not in ported, name
    return ported


@pytest.fixture(scope="session")
def airflow_examples(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The example_dags folder of the apache-airflow wheel (pip's cache makes reruns offline)."""
    folder = tmp_path_factory.mktemp("airflow-wheel")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--quiet",
            "--no-deps",
            "--only-binary=:all:",
            "--dest",
            str(folder),
            f"apache-airflow=={AIRFLOW_VERSION}",
        ],
        check=True,
        timeout=300,
    )
    [wheel] = folder.glob("apache_airflow-*.whl")
    examples = folder / "example_dags"
    examples.mkdir()
    with zipfile.ZipFile(wheel) as archive:
        for member in archive.namelist():
            if re.fullmatch(r"airflow/example_dags/[\w]+\.py", member):
                (examples / Path(member).name).write_bytes(archive.read(member))
    wheel.unlink()
    return examples


def install(home, airflow_examples: Path, name: str) -> None:
    source = (airflow_examples / f"{name}.py").read_text()
    home.write_dag(f"{name}.py", port(source, name))
    parse()


def states_of(dag_id: str, run_id: str) -> dict[str, str]:
    return {task: state for task, (state, _) in ti_states(dag_id, run_id).items()}


def run_to_end(dag_id: str) -> tuple[str, dict[str, str]]:
    run = operations.trigger_dag(dag_id)
    drive(run_finished(dag_id, run.run_id))
    return run.run_id, states_of(dag_id, run.run_id)


def xcom(dag_id: str, run_id: str, task_id: str, key: str = "return_value"):
    with session_scope() as session:
        return session.scalar(
            select(XCom.value).where(
                XCom.dag_id == dag_id,
                XCom.run_id == run_id,
                XCom.task_id == task_id,
                XCom.key == key,
            )
        )


def test_example_bash_operator(home, airflow_examples):
    install(home, airflow_examples, "example_bash_operator")
    run_id, states = run_to_end("example_bash_operator")
    assert states == {
        "runme_0": "success",
        "runme_1": "success",
        "runme_2": "success",
        "run_after_loop": "success",
        "also_run_this": "success",
        "this_will_skip": "skipped",  # exit 99
        "run_this_last": "skipped",  # all_success below a skipped task
    }
    assert re.fullmatch(
        r"ti_key=example_bash_operator__also_run_this__\d{8}",
        xcom("example_bash_operator", run_id, "also_run_this"),
    )


def test_example_short_circuit_operator_and_decorator(home, airflow_examples):
    expected = {
        "true_1": "success",
        "true_2": "success",
        "false_1": "skipped",
        "false_2": "skipped",
        "task_1": "success",
        "task_2": "success",
        "short_circuit": "success",
        "task_3": "success",
        "task_4": "skipped",  # direct downstream of the short circuit
        "task_5": "success",
        "task_6": "skipped",  # all_success below task_4
        "task_7": "success",  # all_done: ignore_downstream_trigger_rules=False lets it run
    }
    install(home, airflow_examples, "example_short_circuit_operator")
    _, states = run_to_end("example_short_circuit_operator")
    assert states == {**expected, "condition_is_True": "success", "condition_is_False": "success"}
    install(home, airflow_examples, "example_short_circuit_decorator")
    _, states = run_to_end("example_short_circuit_decorator")
    assert states == {**expected, "condition_is_true": "success", "condition_is_false": "success"}


def test_example_skip_dag(home, airflow_examples):
    install(home, airflow_examples, "example_skip_dag")
    run_id, states = run_to_end("example_skip_dag")
    assert states == {
        "skip_operator_1": "skipped",
        "always_true_1": "success",
        "all_success": "skipped",
        "final_1": "skipped",
        "skip_operator_2": "skipped",
        "always_true_2": "success",
        "one_success": "success",
        "final_2": "success",
    }
    assert run_state("example_skip_dag", run_id) == "success"


def test_example_nested_branch_and_branch_labels(home, airflow_examples):
    install(home, airflow_examples, "example_nested_branch_dag")
    _, states = run_to_end("example_nested_branch_dag")
    assert states == {
        "branch_1": "success",
        "true_1": "success",
        "false_1": "skipped",
        "branch_2": "skipped",
        "true_2": "skipped",
        "false_2": "skipped",
        "join_2": "skipped",
        "false_3": "skipped",
        "join_1": "success",
    }
    install(home, airflow_examples, "example_branch_labels")
    _, states = run_to_end("example_branch_labels")
    assert set(states.values()) == {"success"} and len(states) == 7


def test_example_branch_dop_operator_v3(home, airflow_examples):
    install(home, airflow_examples, "example_branch_python_dop_operator_3")
    run = operations.trigger_dag("example_branch_dop_operator_v3")
    drive(run_finished("example_branch_dop_operator_v3", run.run_id))
    states = states_of("example_branch_dop_operator_v3", run.run_id)
    chosen = "empty_task_1" if run.logical_date.minute % 2 == 0 else "empty_task_2"
    other = {"empty_task_1", "empty_task_2"} - {chosen}
    assert states == {"should_run": "success", chosen: "success", other.pop(): "skipped"}


def test_example_latest_only_with_trigger(home, airflow_examples):
    from datetime import UTC, datetime

    install(home, airflow_examples, "example_latest_only_with_trigger")
    old = datetime(2021, 1, 2, tzinfo=UTC)
    [run_id] = operations.backfill("latest_only_with_trigger", old, old)
    drive(run_finished("latest_only_with_trigger", run_id))
    states = states_of("latest_only_with_trigger", run_id)
    assert states == {
        "latest_only": "success",
        "task1": "skipped",  # not the latest run
        "task2": "success",
        "task3": "skipped",
        "task4": "success",  # all_done
    }
    install(home, airflow_examples, "example_latest_only")
    _, states = run_to_end("latest_only")  # manual runs always proceed
    assert states == {"latest_only": "success", "task1": "success"}


def test_taskflow_examples(home, airflow_examples):
    install(home, airflow_examples, "tutorial_taskflow_api")
    run_id, states = run_to_end("tutorial_taskflow_api")
    assert states == {"extract": "success", "transform": "success", "load": "success"}
    assert xcom("tutorial_taskflow_api", run_id, "transform", "total_order_value") == 1236.7
    install(home, airflow_examples, "example_xcomargs")
    _, states = run_to_end("example_xcom_args_with_operators")
    assert states == {
        "c": "success",
        "print_value": "success",
        "print_value__1": "success",
        "d": "success",
    }


def test_xcom_and_simple_examples(home, airflow_examples):
    install(home, airflow_examples, "example_xcom")
    run_id, states = run_to_end("example_xcom")
    assert set(states.values()) == {"success"} and len(states) == 6
    assert xcom("example_xcom", run_id, "bash_push") == "value_by_return"
    assert xcom("example_xcom", run_id, "bash_push", "manually_pushed_value") == (
        "manually_pushed_value"
    )
    assert xcom("example_xcom", run_id, "bash_pull") is None  # do_xcom_push=False
    install(home, airflow_examples, "example_display_name")
    _, states = run_to_end("example_display_name")
    assert states == {"sample_task_1": "success", "sample_task_2": "success"}
    install(home, airflow_examples, "tutorial_dag")
    run_id, states = run_to_end("tutorial_dag")
    assert states == {"extract": "success", "transform": "success", "load": "success"}
    assert xcom("tutorial_dag", run_id, "transform", "total_order_value") == (
        '{"total_order_value": 1236.7}'
    )
    install(home, airflow_examples, "example_trigger_target_dag")
    run = operations.trigger_dag("example_trigger_target_dag", conf={"message": "hello"})
    drive(run_finished("example_trigger_target_dag", run.run_id))
    assert states_of("example_trigger_target_dag", run.run_id) == {
        "run_this": "success",
        "bash_task": "success",
    }
    assert xcom("example_trigger_target_dag", run.run_id, "bash_task") == (
        "Here is the message: hello"
    )


def test_day_of_week_and_datetime_branches(home, airflow_examples):
    from flowsched.timezone import utcnow

    install(home, airflow_examples, "example_branch_day_of_week_operator")
    _, states = run_to_end("example_weekday_branch_operator")
    today = utcnow().isoweekday()  # the DAG's zone is UTC (its start_date's)
    monday, weekend = today == 1, today in (6, 7)
    assert states == {
        "make_choice": "success",
        "branch_true": "success" if monday else "skipped",
        "branch_false": "skipped" if monday else "success",
        "make_weekend_choice": "skipped" if monday else "success",
        "branch_weekend": "success" if weekend and not monday else "skipped",
        "branch_mid_week": "success" if not weekend and not monday else "skipped",
    }
    install(home, airflow_examples, "example_branch_datetime_operator")
    # 1: a window in 2020 (now is after it); 2: 15:00-24:00 UTC today; 3: logical date, 2020.
    in_window_2 = utcnow().hour >= 15
    expected = {
        "example_branch_datetime_operator": False,
        "example_branch_datetime_operator_2": in_window_2,
        "example_branch_datetime_operator_3": False,
    }
    for dag_id, inside in expected.items():
        _, states = run_to_end(dag_id)
        assert states == {
            "datetime_branch": "success",
            "date_in_range": "success" if inside else "skipped",
            "date_outside_range": "skipped" if inside else "success",
        }, dag_id


def test_example_bash_decorator(home, airflow_examples, monkeypatch, tmp_path):
    monkeypatch.setenv("AIRFLOW_HOME", str(tmp_path))  # make_dynamic_dirs writes under it
    install(home, airflow_examples, "example_bash_decorator")
    run_id, states = run_to_end("example_bash_decorator")
    assert states == {
        "runme_0": "success",
        "runme_1": "success",
        "runme_2": "success",
        "run_after_loop": "success",
        "also_run_this": "success",
        "also_run_this_again": "success",
        "this_will_skip": "skipped",
        "run_this_last": "success",  # all_done
        "sleep_in": "skipped",  # a day name never equals an IntEnum WeekDay, as in Airflow
        "make_dynamic_dirs": "success",
        # Runs in a fresh temporary folder (as Airflow does), where its glob finds no
        # files, so `stat` gets no operand and fails, as it does in Airflow.
        "get_file_stats": "failed",
    }
    key = xcom("example_bash_decorator", run_id, "also_run_this")
    assert re.fullmatch(r"ti_key=example_bash_decorator__also_run_this__\d{8}", key)
    assert xcom("example_bash_decorator", run_id, "also_run_this_again") == key.replace(
        "also_run_this", "also_run_this_again"
    )
    assert len([p for p in tmp_path.rglob("baz") if p.is_dir()]) == 1


def test_example_sensor_decorator(home, airflow_examples):
    install(home, airflow_examples, "example_sensor_decorator")
    run_id, states = run_to_end("example_sensor_decorator")
    assert states == {"wait_for_upstream": "success", "dummy_operator": "success"}
    assert xcom("example_sensor_decorator", run_id, "wait_for_upstream") == "xcom_value"


def test_example_trigger_controller_dag(home, airflow_examples):
    install(home, airflow_examples, "example_trigger_target_dag")
    install(home, airflow_examples, "example_trigger_controller_dag")
    run_id, states = run_to_end("example_trigger_controller_dag")
    assert states == {"test_trigger_dagrun": "success"}
    target_run = xcom(
        "example_trigger_controller_dag", run_id, "test_trigger_dagrun", "trigger_run_id"
    )
    drive(run_finished("example_trigger_target_dag", target_run))
    assert states_of("example_trigger_target_dag", target_run) == {
        "run_this": "success",
        "bash_task": "success",
    }
    with session_scope() as session:
        run = session.scalar(select(DagRun).where(DagRun.run_id == target_run))
        assert run.conf == {"message": "Hello World"}
        assert run.triggered_by_dag_id == "example_trigger_controller_dag"


def test_example_task_group(home, airflow_examples):
    install(home, airflow_examples, "example_task_group")
    _, states = run_to_end("example_task_group")
    assert states == dict.fromkeys(
        [
            "start",
            "section_1.task_1",
            "section_1.task_2",
            "section_1.task_3",
            "section_2.task_1",
            "section_2.inner_section_2.task_2",
            "section_2.inner_section_2.task_3",
            "section_2.inner_section_2.task_4",
            "end",
        ],
        "success",
    )


def test_example_task_group_decorator(home, airflow_examples):
    install(home, airflow_examples, "example_task_group_decorator")
    _, states = run_to_end("example_task_group_decorator")
    # Five calls of the same @task_group: its group ids get __1.. __4, as in Airflow.
    groups = ["task_group_function", *(f"task_group_function__{n}" for n in range(1, 5))]
    expected = ["task_start", "task_end"] + [f"{g}.task_{n}" for g in groups for n in (1, 2, 3)]
    assert states == dict.fromkeys(expected, "success")


def _mapped(dag_id: str, run_id: str, task_id: str) -> list[tuple[int, str, object]]:
    """(map_index, state, return value) of each copy of a mapped task."""
    from flowsched.db.models import TaskInstance

    with session_scope() as session:
        rows = session.execute(
            select(TaskInstance.map_index, TaskInstance.state, XCom.value)
            .outerjoin(
                XCom, (XCom.task_instance_id == TaskInstance.id) & (XCom.key == "return_value")
            )
            .where(
                TaskInstance.dag_id == dag_id,
                TaskInstance.run_id == run_id,
                TaskInstance.task_id == task_id,
            )
            .order_by(TaskInstance.map_index)
        ).all()
    return [tuple(row) for row in rows]


def test_example_dynamic_task_mapping(home, airflow_examples):
    install(home, airflow_examples, "example_dynamic_task_mapping")
    run_id, states = run_to_end("example_dynamic_task_mapping")
    assert run_state("example_dynamic_task_mapping", run_id) == "success"
    assert _mapped("example_dynamic_task_mapping", run_id, "add_one") == [
        (0, "success", 2),
        (1, "success", 3),
        (2, "success", 4),
    ]
    assert states["sum_it"] == "success"


def test_example_dynamic_task_mapping_with_no_taskflow_operators(home, airflow_examples):
    name = "example_dynamic_task_mapping_with_no_taskflow_operators"
    install(home, airflow_examples, name)
    run_id, _ = run_to_end(name)
    assert run_state(name, run_id) == "success"
    assert [v for _, _, v in _mapped(name, run_id, "add_one")] == [2, 3, 4]
    assert xcom(name, run_id, "sum_it") == 9
