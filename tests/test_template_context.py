"""Airflow's template context and template settings, rendered by real task processes."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import select

from flowsched import operations
from flowsched.db.engine import session_scope
from flowsched.db.models import XCom
from tests.harness import drive, parse, run_finished, ti_states, tries


def xcoms(dag_id: str) -> dict[tuple[str, str], object]:
    with session_scope() as session:
        rows = session.execute(
            select(XCom.task_id, XCom.key, XCom.value).where(XCom.dag_id == dag_id)
        ).all()
    return {(task_id, key): value for task_id, key, value in rows}


CONTEXT = """
import pendulum
from flowsched import DAG, BashOperator, PythonOperator, task

with DAG("ctx", schedule="@daily", start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
         params={{"colour": "blue"}},
         user_defined_macros={{"greeting": "hello"}},
         user_defined_filters={{"shout": lambda text: text.upper()}},
         template_searchpath=[{search!r}]) as dag:

    @task
    def make():
        return "made-value"

    made = make()
    show = BashOperator(task_id="show", bash_command=(
        "echo conf={{{{ dag_run.conf.get('who', 'nobody') }}}}"
        "/key={{{{ task_instance_key_str }}}}/ds={{{{ ds }}}}/ds_nodash={{{{ ds_nodash }}}}"
        "/ts_nodash={{{{ ts_nodash }}}}/prev={{{{ prev_ds }}}}/next={{{{ next_ds }}}}"
        "/start={{{{ data_interval_start.in_timezone('UTC').isoformat() }}}}"
        "/end={{{{ data_interval_end.in_timezone('UTC').isoformat() }}}}"
        "/year={{{{ logical_date.format('YYYY') }}}}/colour={{{{ params.colour }}}}"
        "/macro={{{{ greeting | shout }}}}/run={{{{ dag_run.run_id }}}}"
        "/external={{{{ dag_run.external_trigger }}}}/xcom=" + str(made)
    ))
    made >> show
    from_file = BashOperator(task_id="from_file", bash_command="scripts/greet.sh")
    from_searchpath = BashOperator(task_id="from_searchpath", bash_command="found.sh")

    @task
    def pair() -> dict[str, int]:
        return {{"a": 1, "b": 2}}

    pair()
    PythonOperator(task_id="quiet", python_callable=lambda: "unseen", do_xcom_push=False)

    def show_templates(templates_dict):
        return templates_dict["day"]

    @task
    def current():
        from flowsched.operators.python import get_current_context

        context = get_current_context()
        return context["task"].render_template("{{{{ ds_nodash }}}}-{{{{ greeting }}}}", context)

    current()

    PythonOperator(task_id="templates", python_callable=show_templates,
                   templates_dict={{"day": "{{{{ ds_nodash }}}}"}})
"""


def test_template_context_keys_are_airflows(home):
    search = home.root / "templates"
    search.mkdir()
    (search / "found.sh").write_text("echo searchpath {{ ds }}\n")
    (home.dags / "scripts").mkdir()
    (home.dags / "scripts" / "greet.sh").write_text("echo file {{ ds_nodash }}\n")
    home.write_dag("ctx.py", CONTEXT.format(search=str(search)))
    parse()
    day = datetime(2026, 1, 5, tzinfo=UTC)
    [backfilled] = operations.backfill("ctx", day, day)
    drive(run_finished("ctx", backfilled))
    manual = operations.trigger_dag("ctx", conf={"who": "ops"})
    drive(run_finished("ctx", manual.run_id))
    assert {state for state, _ in ti_states("ctx", backfilled).values()} == {"success"}
    with session_scope() as session:
        values = {
            (run_id, task_id, key): value
            for run_id, task_id, key, value in session.execute(
                select(XCom.run_id, XCom.task_id, XCom.key, XCom.value)
            )
        }
    # The cluster zone is +08:00 (conftest): 2026-01-05 00:00 UTC is the 5th there too.
    assert values[(backfilled, "show", "return_value")] == (
        f"conf=nobody/key=ctx__show__20260105/ds=2026-01-05/ds_nodash=20260105"
        f"/ts_nodash=20260105T080000/prev=2026-01-04/next=2026-01-06"
        f"/start=2026-01-05T00:00:00+00:00/end=2026-01-06T00:00:00+00:00"
        f"/year=2026/colour=blue/macro=HELLO/run={backfilled}/external=False/xcom=made-value"
    )
    manual_show = values[(manual.run_id, "show", "return_value")]
    assert manual_show.startswith("conf=ops/")
    assert "/external=True/" in manual_show
    ds = manual_show.split("/ds=")[1].split("/")[0]
    # A manual run's prev_ds and next_ds are its own ds, as in Airflow.
    assert f"/prev={ds}/next={ds}/" in manual_show
    assert values[(backfilled, "from_file", "return_value")] == "file 20260105"
    assert values[(backfilled, "from_searchpath", "return_value")] == "searchpath 2026-01-05"
    assert values[(backfilled, "pair", "a")] == 1 and values[(backfilled, "pair", "b")] == 2
    assert values[(backfilled, "pair", "return_value")] == {"a": 1, "b": 2}
    assert (backfilled, "quiet", "return_value") not in values
    assert values[(backfilled, "templates", "return_value")] == "20260105"
    assert values[(backfilled, "current", "return_value")] == "20260105-hello"
    assert tries("ctx", "show")[0].rendered_fields["bash_command"].endswith("xcom=made-value")


UNDEFINED = """
from datetime import datetime
import jinja2
from flowsched import DAG, BashOperator, PythonOperator

with DAG("strict", start_date=datetime(2026, 1, 1)) as strict:
    BashOperator(task_id="t", bash_command="echo a={{ nope }}=b")

with DAG("lenient", start_date=datetime(2026, 1, 1), template_undefined=jinja2.Undefined) as dag:
    BashOperator(task_id="t", bash_command="echo a={{ nope }}=b")

with DAG("native", start_date=datetime(2026, 1, 1), render_template_as_native_obj=True) as dag:
    PythonOperator(task_id="t", python_callable=lambda numbers: sum(numbers),
                   op_kwargs={"numbers": "{{ [1, 2, 3] }}"})
"""


def test_undefined_names_and_native_rendering_follow_the_dag_settings(home):
    home.write_dag("undefined.py", UNDEFINED)
    parse()
    for dag_id in ("strict", "lenient", "native"):
        operations.trigger_dag(dag_id)
    drive(lambda: all(run_finished(d)() for d in ("strict", "lenient", "native")))
    # Airflow's default template_undefined is jinja2.StrictUndefined: the task fails.
    assert ti_states("strict")["t"][0] == "failed"
    assert "'nope' is undefined" in tries("strict", "t")[0].error
    assert ti_states("lenient")["t"][0] == "success"
    values = xcoms("lenient")
    assert values[("t", "return_value")] == "a==b"
    assert xcoms("native")[("t", "return_value")] == 6


BASH = """
from datetime import datetime
from flowsched import DAG, BashOperator

with DAG("bash_env", start_date=datetime(2026, 1, 1)) as dag:
    BashOperator(task_id="replaced", bash_command="echo ${{AUTHORING_MARK:-unset}}-$ONLY",
                 env={{"ONLY": "1"}})
    BashOperator(task_id="appended", bash_command="echo ${{AUTHORING_MARK:-unset}}-$ONLY",
                 env={{"ONLY": "1"}}, append_env=True)
    BashOperator(task_id="inherited", bash_command="echo ${{AUTHORING_MARK:-unset}}")
    BashOperator(task_id="in_cwd", bash_command="pwd", cwd={cwd!r})
    BashOperator(task_id="no_cwd", bash_command="pwd", cwd={missing!r})
"""


def test_bash_env_append_env_and_cwd(home, monkeypatch):
    monkeypatch.setenv("AUTHORING_MARK", "inherited")
    cwd = home.root / "work"
    cwd.mkdir()
    home.write_dag("bash_env.py", BASH.format(cwd=str(cwd), missing=str(home.root / "missing")))
    parse()
    operations.trigger_dag("bash_env")
    drive(run_finished("bash_env"))
    values = xcoms("bash_env")
    assert values[("replaced", "return_value")] == "unset-1"
    assert values[("appended", "return_value")] == "inherited-1"
    assert values[("inherited", "return_value")] == "inherited"
    assert values[("in_cwd", "return_value")] == str(cwd)
    assert ti_states("bash_env")["no_cwd"][0] == "failed"
    assert "can not find the cwd" in tries("bash_env", "no_cwd")[0].error


DAG_DECORATOR = """
from datetime import datetime
from flowsched import dag, task

@dag(schedule=None, start_date=datetime(2026, 1, 1))
def decorated(rows: int = 3, label: str = "x"):
    @task
    def double(n):
        return n * 2

    @task
    def tag(text):
        return f"tag-{text}"

    double(rows)
    tag(label)

decorated()
"""


def test_dag_decorator_arguments_reach_tasks_as_params(home):
    home.write_dag("decorated.py", DAG_DECORATOR)
    parse()
    run = operations.trigger_dag("decorated")
    drive(run_finished("decorated", run.run_id))
    values = xcoms("decorated")
    assert values[("double", "return_value")] == 6
    assert values[("tag", "return_value")] == "tag-x"
    # The run's conf overrides params (core.dag_run_conf_overrides_params, as in Airflow).
    other = operations.trigger_dag("decorated", conf={"rows": 5})
    drive(run_finished("decorated", other.run_id))
    with session_scope() as session:
        doubled = session.scalar(
            select(XCom.value).where(XCom.run_id == other.run_id, XCom.task_id == "double")
        )
    assert doubled == 10


def test_lazy_context_values_are_read_once_and_only_when_used():
    """prev_*_success are lazy (as Airflow's proxies): no query for a task that never reads
    them, and a value that stands for the real one when it does."""
    from datetime import UTC, datetime, timedelta

    from flowsched.context import Lazy

    reads = []
    value = datetime(2026, 1, 2, tzinfo=UTC)
    lazy = Lazy(lambda: reads.append(1) or value)
    assert reads == []
    assert isinstance(lazy, datetime) and lazy == value and str(lazy) == str(value)
    assert lazy + timedelta(days=1) == datetime(2026, 1, 3, tzinfo=UTC)
    assert lazy.strftime("%Y%m%d") == "20260102" and f"{lazy:%d}" == "02"
    assert reads == [1]  # computed once
    nothing = Lazy(lambda: None)
    assert not nothing and str(nothing) == "None" and nothing == None  # noqa: E711
