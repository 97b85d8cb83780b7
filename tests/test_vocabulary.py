"""Airflow's everyday authoring words, checked at DAG-definition time (no scheduler)."""

from __future__ import annotations

from datetime import datetime, timedelta

import jinja2
import pendulum
import pytest

from flowsched import (
    DAG,
    BashOperator,
    EmptyOperator,
    Label,
    PythonOperator,
    chain,
    chain_linear,
    cross_downstream,
    dag,
    task,
)
from flowsched.exceptions import DagDefinitionError
from flowsched.serialization import SerializedDAG


@pytest.fixture(autouse=True)
def _config(sqlite_home):
    return sqlite_home


def edges(d: DAG) -> set[tuple[str, str]]:
    return {(up, t.task_id) for t in d.tasks.values() for up in t.upstream_task_ids}


def empties(d: DAG, names: str) -> list[EmptyOperator]:
    return [EmptyOperator(task_id=name, dag=d) for name in names]


def test_dag_decorator_builds_the_dag_with_params_and_doc():
    import flowsched.dag  # noqa: F401  the module stays importable for internal use
    from flowsched.dag import DAG as ModuleDAG

    assert ModuleDAG is DAG and callable(dag)

    @dag(schedule=None, start_date=datetime(2026, 1, 1), tags=["t"])
    def my_pipeline(rows: int = 3):
        """Counts **rows**."""

        @task
        def count(n):
            return n

        count(rows) >> EmptyOperator(task_id="end")

    built = my_pipeline()
    assert isinstance(built, DAG)
    assert built.dag_id == "my_pipeline" and built.tags == ["t"]
    assert built.params == {"rows": 3}
    assert built.doc_md == "Counts **rows**."
    assert edges(built) == {("count", "end")}

    @dag
    def bare():
        EmptyOperator(task_id="only")

    assert bare().task_ids == ["only"]
    assert my_pipeline(rows=5).params == {"rows": 5}


def test_chain_links_neighbours_and_lists_pairwise():
    d = DAG("chained", start_date=datetime(2026, 1, 1))
    a, b, c, e, f, g = empties(d, "abcefg")
    chain(a, [b, c], [e, f], g)
    assert edges(d) == {("a", "b"), ("a", "c"), ("b", "e"), ("c", "f"), ("e", "g"), ("f", "g")}
    with pytest.raises(DagDefinitionError, match=r"same length.*got 2 and 1"):
        chain([a, b], [c])


def test_chain_linear_links_every_task_of_one_element_to_the_next():
    d = DAG("linear", start_date=datetime(2026, 1, 1))
    a, b, c, e, f = empties(d, "abcef")
    chain_linear(a, [b, c], [e, f])
    assert edges(d) == {("a", "b"), ("a", "c"), ("b", "e"), ("b", "f"), ("c", "e"), ("c", "f")}
    with pytest.raises(DagDefinitionError, match="forget to expand"):
        chain_linear([a, b])


def test_cross_downstream():
    d = DAG("cross", start_date=datetime(2026, 1, 1))
    a, b, c, e = empties(d, "abce")
    cross_downstream([a, b], [c, e])
    assert edges(d) == {("a", "c"), ("a", "e"), ("b", "c"), ("b", "e")}


def test_labels_name_edges_and_are_serialized():
    with DAG("labels", start_date=datetime(2026, 1, 1)) as d:
        check, ok, bad, report = (EmptyOperator(task_id=n) for n in ("check", "ok", "bad", "rep"))
        check >> Label("valid") >> ok
        check >> Label("invalid") >> [bad, report]
        chain(ok, Label("then"), report)
    assert edges(d) == {("check", "ok"), ("check", "bad"), ("check", "rep"), ("ok", "rep")}
    serialized = SerializedDAG(d.to_dict())
    assert serialized.edge_info == {
        "check": {
            "ok": {"label": "valid"},
            "bad": {"label": "invalid"},
            "rep": {"label": "invalid"},
        },
        "ok": {"rep": {"label": "then"}},
    }


def test_pendulum_start_dates_keep_their_zone():
    d = DAG(
        "amsterdam",
        schedule="0 6 * * *",
        start_date=pendulum.datetime(2026, 3, 1, tz="Europe/Amsterdam"),
    )
    data = d.to_dict()
    assert data["timezone"] == "Europe/Amsterdam"
    assert data["start_date"] == "2026-02-28T23:00:00+00:00"  # midnight CET (UTC+1)
    fixed = DAG("fixed", start_date=pendulum.datetime(2026, 1, 1, tz=pendulum.FixedTimezone(7200)))
    assert str(fixed.timezone) == "Etc/GMT-2"
    with pytest.raises(DagDefinitionError, match="not whole hours"):
        DAG("odd", start_date=pendulum.datetime(2026, 1, 1, tz=pendulum.FixedTimezone(19800)))


def test_airflow_arguments_are_accepted_with_their_meaning():
    with DAG(
        "args",
        schedule_interval="@daily",
        start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
        dagrun_timeout=timedelta(minutes=5),
        doc_md="# Hello",
        dag_display_name="Arguments",
        user_defined_macros={"x": 1},
        user_defined_filters={"twice": lambda v: v * 2},
        render_template_as_native_obj=True,
        template_undefined=jinja2.Undefined,
        orientation="TB",
        template_searchpath="/tmp",
        default_args={"owner": "airflow", "email_on_failure": False, "depends_on_past": False},
    ) as d:
        t = BashOperator(
            task_id="t",
            bash_command="true",
            doc_md="*doc*",
            task_display_name="The task",
            do_xcom_push=False,
            multiple_outputs=False,
            outlets=[],
            owner="me",
        )
        PythonOperator(task_id="p", python_callable=lambda: 1, templates_dict={"a": "{{ ds }}"})
    data = d.to_dict()
    assert data["schedule"] == {"type": "cron", "expression": "@daily"}
    assert data["dagrun_timeout"] == 300.0
    assert (data["doc_md"], data["dag_display_name"]) == ("# Hello", "Arguments")
    spec = next(task for task in data["tasks"] if task["task_id"] == "t")
    assert spec["doc"] == "*doc*" and spec["task_display_name"] == "The task"
    assert t.do_xcom_push is False
    assert d.template_searchpath == ["/tmp"]
    assert d.get_template_env().filters["twice"](2) == 4


def test_xcom_arg_in_a_templated_field_adds_the_dependency():
    with DAG("xcom_dep", start_date=datetime(2026, 1, 1)) as d:

        @task
        def make():
            return "hi"

        made = make()
        BashOperator(task_id="direct", bash_command=made)
        in_fstring = BashOperator(task_id="fstring", bash_command=f"echo {made}")
    assert d.tasks["direct"].upstream_task_ids == {"make"}
    # As in Airflow, an f-string holds only text: it pulls the value but adds no edge.
    assert in_fstring.upstream_task_ids == set()
    assert "xcom_pull(task_ids='make'" in in_fstring.bash_command


def test_task_returning_a_dict_annotation_gets_multiple_outputs():
    with DAG("multi", start_date=datetime(2026, 1, 1)) as d:

        @task
        def pair() -> dict[str, int]:
            return {"a": 1}

        @task(multiple_outputs=False)
        def plain() -> dict[str, int]:
            return {"a": 1}

        pair()
        plain()
    assert d.tasks["pair"].multiple_outputs is True
    assert d.tasks["plain"].multiple_outputs is False


def test_empty_operator_is_serialized_as_empty():
    with DAG("empty", start_date=datetime(2026, 1, 1)) as d:
        EmptyOperator(task_id="e") >> BashOperator(task_id="b", bash_command="true")
    specs = SerializedDAG(d.to_dict()).tasks
    assert specs["e"].is_empty and not specs["b"].is_empty


def test_unknown_branch_return_type_is_named():
    from flowsched.operators.skip import BranchError, SkipMixin

    with DAG("branchy", start_date=datetime(2026, 1, 1)) as d:
        PythonOperator(task_id="p", python_callable=lambda: 1)
    mixin = SkipMixin()
    mixin.task_id, mixin.dag, mixin.downstream_task_ids = "p", d, set()
    with pytest.raises(BranchError, match="got int 5"):
        mixin.skip_all_except(None, 5)
    with pytest.raises(BranchError, match=r"only task ids \(strings\), got \[3\]"):
        mixin.skip_all_except(None, ["p", 3])
