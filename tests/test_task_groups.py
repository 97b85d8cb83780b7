"""Task groups: ids, default_args, nesting, ``>>`` between groups, serialization, a real run."""

from __future__ import annotations

from datetime import datetime

import pytest

from flowsched import DAG, BashOperator, EmptyOperator, TaskGroup, operations, task, task_group
from flowsched.exceptions import DagDefinitionError, DuplicateTaskIdError
from flowsched.serialization import SerializedDAG
from tests.harness import drive, parse, run_finished, run_state, ti_states

START = datetime(2026, 1, 1)


@pytest.fixture
def _sqlite(sqlite_home):
    return sqlite_home


def upstream_of(dag: DAG) -> dict[str, list[str]]:
    return {task_id: sorted(t.upstream_task_ids) for task_id, t in dag.tasks.items()}


@pytest.mark.usefixtures("_sqlite")
def test_nested_groups_prefix_ids_merge_default_args_and_link_roots_and_leaves():
    with DAG("groups", start_date=START, default_args={"retries": 1, "queue": "q"}) as dag:
        start = EmptyOperator(task_id="start")
        with TaskGroup("extract", default_args={"retries": 3}, tooltip="pull data") as extract:
            a = EmptyOperator(task_id="a")
            with TaskGroup("inner") as inner:
                b = EmptyOperator(task_id="b")
                c = EmptyOperator(task_id="c", retries=5)
            a >> inner
        with TaskGroup("load", prefix_group_id=False) as load:
            d = EmptyOperator(task_id="d")
        end = EmptyOperator(task_id="end")
        start >> extract >> load >> end
    assert (a.task_id, b.task_id, c.task_id, d.task_id) == (
        "extract.a",
        "extract.inner.b",
        "extract.inner.c",
        "d",
    )
    assert inner.group_id == "extract.inner" and load.group_id == "load"
    # Group default_args override the DAG's; nested groups inherit; explicit wins.
    assert (start.retries, a.retries, b.retries, c.retries, d.retries) == (1, 3, 3, 5, 1)
    assert b.queue == "q"
    assert upstream_of(dag) == {
        "start": [],
        "extract.a": ["start"],  # start >> extract: the group's roots only
        "extract.inner.b": ["extract.a"],
        "extract.inner.c": ["extract.a"],
        "d": ["extract.inner.b", "extract.inner.c"],  # extract >> load: leaves to roots
        "end": ["d"],
    }
    assert a.task_group is extract and b.task_group is inner and start.task_group is None
    assert list(extract.children) == ["extract.a", "extract.inner"]


@pytest.mark.usefixtures("_sqlite")
def test_task_group_decorator_suffixes_repeats_and_returns_the_last_task():
    with DAG("decorated", start_date=START) as dag:

        @task
        def make():
            return 1

        @task
        def use(value):
            return value

        @task_group(default_args={"retries": 2})
        def section():
            """Make then use."""
            return use(make())

        first = section()
        second = section()
        done = EmptyOperator(task_id="done")
        first >> done
        second >> done
    assert sorted(dag.tasks) == [
        "done",
        "section.make",
        "section.use",
        "section__1.make",
        "section__1.use",
    ]
    assert dag.tasks["section.use"].retries == 2
    assert dag.tasks["section.use"].upstream_task_ids == {"section.make"}
    assert dag.tasks["done"].upstream_task_ids == {"section.use", "section__1.use"}
    assert dag.task_groups["section"].tooltip == "Make then use."


@pytest.mark.usefixtures("_sqlite")
def test_repeated_task_calls_inside_a_group_get_suffixes_and_group_to_task_links():
    with DAG("repeats", start_date=START) as dag:

        @task
        def step():
            return 1

        with TaskGroup("g") as group:
            step()
            step()
        after = EmptyOperator(task_id="after")
        group >> after
    assert sorted(dag.tasks) == ["after", "g.step", "g.step__1"]
    assert after.upstream_task_ids == {"g.step", "g.step__1"}


@pytest.mark.usefixtures("_sqlite")
def test_group_errors_name_what_is_wrong():
    with pytest.raises(DagDefinitionError, match="TaskGroup 'lonely' must be created inside a DAG"):
        TaskGroup("lonely")
    with DAG("bad_groups", start_date=START):
        TaskGroup("twice")
        with pytest.raises(DuplicateTaskIdError, match="group_id 'twice' has already been added"):
            TaskGroup("twice")
        with pytest.raises(DagDefinitionError, match=r"invalid group_id 'a\.b'"):
            TaskGroup("a.b")
        with pytest.raises(DuplicateTaskIdError, match="task_id 'twice' is already a task group"):
            EmptyOperator(task_id="twice")


@pytest.mark.usefixtures("_sqlite")
def test_serialized_dag_carries_the_group_tree_for_the_ui():
    with DAG("tree", start_date=START) as dag:
        with TaskGroup("outer", tooltip="the outside"), TaskGroup("inner"):
            EmptyOperator(task_id="t")
        EmptyOperator(task_id="top")
    serialized = SerializedDAG(dag.to_dict())
    assert [(g.group_id, g.parent_group_id, g.label) for g in serialized.task_groups.values()] == [
        ("outer", None, "outer"),
        ("outer.inner", "outer", "inner"),
    ]
    assert serialized.task_groups["outer"].tooltip == "the outside"
    assert serialized.task_group_of == {"outer.inner.t": "outer.inner", "top": None}
    assert serialized.groups_of("outer.inner.t") == ["outer", "outer.inner"]


GROUPED = """
from datetime import datetime
from flowsched import DAG, BashOperator, TaskGroup, task, task_group

with DAG("grouped", start_date=datetime(2026, 1, 1)) as dag:
    start = BashOperator(task_id="start", bash_command="true")
    with TaskGroup("extract") as extract:
        BashOperator(task_id="pull", bash_command="exit 1")

    @task_group
    def load():
        @task
        def write():
            return "written"
        write()

    end = BashOperator(task_id="end", bash_command="true", trigger_rule="all_done")
    start >> extract >> load() >> end
"""


def test_a_grouped_dag_runs_with_group_ids_and_edges(home):
    home.write_dag("grouped.py", GROUPED)
    parse()
    operations.trigger_dag("grouped")
    drive(run_finished("grouped"))
    states = {task_id: state for task_id, (state, _) in ti_states("grouped").items()}
    assert states == {
        "start": "success",
        "extract.pull": "failed",
        "load.write": "upstream_failed",
        "end": "success",
    }
    # As in Airflow, the run's state follows its leaves: "end" (all_done) succeeded.
    assert run_state("grouped") == "success"


def test_operator_in_group_keeps_explicit_task_group_argument(sqlite_home):
    with DAG("explicit", start_date=START):
        group = TaskGroup("g")
        op = BashOperator(task_id="t", bash_command="true", task_group=group)
    assert op.task_id == "g.t" and group.children == {"g.t": op}


def test_example_task_groups_dag_runs(home):
    import shutil
    from pathlib import Path

    import flowsched

    example = Path(flowsched.__file__).parent / "example_dags" / "example_task_groups.py"
    shutil.copy(example, home.dags / example.name)
    parse()
    operations.trigger_dag("example_task_groups")
    drive(run_finished("example_task_groups"))
    states = {task_id: state for task_id, (state, _) in ti_states("example_task_groups").items()}
    assert states == dict.fromkeys(
        [
            "start",
            "extract.orders",
            "extract.customers",
            "transform.clean",
            "transform.aggregate",
            "transform.checks.row_count",
            "publish",
        ],
        "success",
    )
