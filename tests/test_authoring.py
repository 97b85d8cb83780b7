"""The authoring API: DAGs, operators, dependencies, @task, and definition errors."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from flowsched import DAG, BashOperator, PythonOperator, task
from flowsched.exceptions import CycleError, DagDefinitionError, DuplicateTaskIdError
from flowsched.scheduler.dependencies import Decision, evaluate
from flowsched.state import TriggerRule


@pytest.fixture(autouse=True)
def _config(sqlite_home):
    return sqlite_home


def test_dependency_syntax_lists_and_reverse():
    with DAG("deps", start_date=datetime(2026, 1, 1)) as dag:
        a, b, c, d = (BashOperator(task_id=n, bash_command="true") for n in "abcd")
        [a, b] >> c
        d << c
    assert dag.tasks["c"].upstream_task_ids == {"a", "b"}
    assert dag.tasks["d"].upstream_task_ids == {"c"}
    assert dag.tasks["a"].downstream_task_ids == {"c"}


def test_default_args_flow_to_tasks_and_explicit_wins():
    args = {"retries": 3, "retry_delay": timedelta(seconds=7), "queue": "gpu"}
    with DAG("defaults", start_date=datetime(2026, 1, 1), default_args=args):
        plain = BashOperator(task_id="plain", bash_command="true")
        explicit = BashOperator(task_id="explicit", bash_command="true", retries=0)
    assert (plain.retries, plain.retry_delay, plain.queue) == (3, timedelta(seconds=7), "gpu")
    assert explicit.retries == 0


def test_cycle_error_names_the_cycle():
    with DAG("cyclic", start_date=datetime(2026, 1, 1)) as dag:
        a, b, c = (BashOperator(task_id=n, bash_command="true") for n in "abc")
        a >> b >> c >> a
    with pytest.raises(CycleError, match=r"DAG 'cyclic' has a cycle: a -> b -> c -> a"):
        dag.to_dict()


def test_duplicate_task_id():
    with DAG("dup", start_date=datetime(2026, 1, 1)):
        BashOperator(task_id="x", bash_command="true")
        with pytest.raises(DuplicateTaskIdError, match="DAG 'dup': duplicate task_id 'x'"):
            BashOperator(task_id="x", bash_command="true")


def test_unknown_trigger_rule_lists_known_ones():
    with (
        DAG("rules", start_date=datetime(2026, 1, 1)),
        pytest.raises(
            DagDefinitionError, match=r"task 't': unknown trigger_rule 'sometimes'.*all_success"
        ),
    ):
        BashOperator(task_id="t", bash_command="true", trigger_rule="sometimes")


@pytest.mark.parametrize("schedule", ["61 * * * *", "every day", "@fortnightly"])
def test_bad_schedule_names_the_dag(schedule):
    with pytest.raises(DagDefinitionError, match="DAG 'sched'"):
        DAG("sched", schedule=schedule, start_date=datetime(2026, 1, 1))


def test_naive_start_date_means_the_cluster_zone():
    dag = DAG("naive", schedule="@daily", start_date=datetime(2026, 1, 1))
    assert dag.start_date.utcoffset() == timedelta(hours=8)
    assert dag.to_dict()["start_date"] == "2025-12-31T16:00:00+00:00"


def test_scheduled_dag_needs_start_date():
    with pytest.raises(DagDefinitionError, match="needs a start_date"):
        DAG("nostart", schedule="@daily")


def test_task_decorator_wires_xcom_dependencies_and_unique_ids():
    with DAG("decorated", start_date=datetime(2026, 1, 1)) as dag:

        @task(retries=2)
        def extract():
            return 1

        @task
        def load(value, other):
            return value + other

        first, second = extract(), extract()
        load(first, other=second)
    assert set(dag.tasks) == {"extract", "extract__1", "load"}
    assert dag.tasks["load"].upstream_task_ids == {"extract", "extract__1"}
    assert dag.tasks["extract"].retries == 2


def test_task_outside_dag_is_a_clear_error():
    @task
    def orphan():
        return 1

    with pytest.raises(DagDefinitionError, match="called outside a DAG"):
        orphan()


def test_unknown_operator_argument_is_named():
    with (
        DAG("args", start_date=datetime(2026, 1, 1)),
        pytest.raises(DagDefinitionError, match=r"unknown argument.*retires"),
    ):
        PythonOperator(task_id="p", python_callable=print, retires=3)


def test_exponential_retry_delay_is_capped():
    with DAG("backoff", start_date=datetime(2026, 1, 1)):
        op = BashOperator(
            task_id="b",
            bash_command="true",
            retry_delay=10,
            retry_exponential_backoff=True,
            max_retry_delay=timedelta(seconds=35),
        )
    assert [op.retry_delay_for(n).total_seconds() for n in (1, 2, 3, 4)] == [10, 20, 35, 35]


def test_serialized_form_round_trips_to_the_scheduler_view():
    from flowsched.serialization import SerializedDAG

    with DAG("ser", schedule=timedelta(hours=2), start_date=datetime(2026, 1, 1, tzinfo=UTC)) as d:
        a = BashOperator(task_id="a", bash_command="true", execution_timeout=5, priority_weight=3)
        b = BashOperator(task_id="b", bash_command="true", trigger_rule="all_done")
        a >> b
    view = SerializedDAG(d.to_dict())
    assert view.topological_order() == ["a", "b"]
    assert view.tasks["b"].trigger_rule is TriggerRule.ALL_DONE
    assert view.tasks["a"].execution_timeout == timedelta(seconds=5)
    assert view.downstream == {"a": ["b"], "b": []}
    assert view.schedule.describe() == "2:00:00"


S, F, UF, SK, R, N = "success", "failed", "upstream_failed", "skipped", "running", "none"


@pytest.mark.parametrize(
    ("rule", "upstream", "expected"),
    [
        ("all_success", [S, S], Decision.READY),
        ("all_success", [S, R], Decision.WAIT),
        ("all_success", [S, F], Decision.UPSTREAM_FAILED),
        ("all_success", [S, SK], Decision.SKIP),
        ("all_failed", [F, UF], Decision.READY),
        ("all_failed", [F, S], Decision.SKIP),
        ("all_failed", [F, R], Decision.WAIT),
        ("all_done", [S, F, SK], Decision.READY),
        ("all_done", [S, N], Decision.WAIT),
        ("one_success", [S, R], Decision.READY),
        ("one_success", [F, F], Decision.UPSTREAM_FAILED),
        ("one_success", [SK, SK], Decision.SKIP),
        ("one_failed", [F, R], Decision.READY),
        ("one_failed", [S, S], Decision.SKIP),
        ("none_failed", [S, SK], Decision.READY),
        ("none_failed", [S, UF], Decision.UPSTREAM_FAILED),
        ("none_failed", [S, R], Decision.WAIT),
        ("none_failed_min_one_success", [SK, S], Decision.READY),
        ("none_failed_min_one_success", [SK, SK], Decision.SKIP),
        ("none_failed_min_one_success", [F, S], Decision.UPSTREAM_FAILED),
        ("all_success", [], Decision.READY),
    ],
)
def test_trigger_rules(rule, upstream, expected):
    assert evaluate(TriggerRule(rule), upstream) is expected
