"""Dynamic task mapping end to end: authoring, serialization, scheduler expansion, the
local executor's copies, the reduce step, errors, per-index retries and clears.

Semantics checked are Airflow 2.x's: map_index -1 for unmapped tasks, copies 0..n-1,
the cross product of several expand() arguments (last varies fastest), a dict mapped
as (key, value) pairs, a zero-length map skipping the task, and [core] max_map_length.
"""

from __future__ import annotations

import pytest
from sqlalchemy import select

from flowsched import operations
from flowsched.db.engine import session_scope
from flowsched.db.models import TaskInstance, TaskTry, XCom
from tests.harness import drive, parse, run_finished, run_state
from tests.web import test_e2e

browser = test_e2e.browser  # the module-scoped Chromium fixture, shared


def copies(dag_id: str, task_id: str) -> list[tuple[int, str, int]]:
    """(map_index, state, try_number) of a task's instances, in map_index order."""
    with session_scope() as session:
        return [
            (ti.map_index, ti.state, ti.try_number)
            for ti in session.scalars(
                select(TaskInstance)
                .where(TaskInstance.dag_id == dag_id, TaskInstance.task_id == task_id)
                .order_by(TaskInstance.map_index)
            )
        ]


def xcoms(dag_id: str, task_id: str) -> list[tuple[int, object]]:
    with session_scope() as session:
        return [
            (row.map_index, row.value)
            for row in session.scalars(
                select(XCom)
                .where(XCom.dag_id == dag_id, XCom.task_id == task_id, XCom.key == "return_value")
                .order_by(XCom.map_index)
            )
        ]


def errors(dag_id: str, task_id: str) -> list[str | None]:
    with session_scope() as session:
        return list(
            session.scalars(
                select(TaskTry.error)
                .where(TaskTry.dag_id == dag_id, TaskTry.task_id == task_id)
                .order_by(TaskTry.id)
            )
        )


TASKFLOW = """
from datetime import datetime
from flowsched import DAG, task

with DAG("taskflow_map", start_date=datetime(2026, 1, 1)) as dag:
    @task
    def make():
        return [1, 2, 3]

    @task
    def add(x, y):
        return x + y

    @task
    def total(values):
        return {"values": list(values), "sum": sum(values)}

    @task
    def negate(x):
        return -x

    added = add.partial(y=10).expand(x=make())
    total(added)
    negate.expand(x=added)  # second order: mapped over a mapped task's results
"""


def test_taskflow_expand_over_xcom_and_reduce_in_order(home):
    home.write_dag("taskflow_map.py", TASKFLOW)
    parse()
    operations.trigger_dag("taskflow_map")
    drive(run_finished("taskflow_map"))
    assert run_state("taskflow_map") == "success"
    assert copies("taskflow_map", "make") == [(-1, "success", 1)]
    assert copies("taskflow_map", "add") == [
        (0, "success", 1),
        (1, "success", 1),
        (2, "success", 1),
    ]
    assert xcoms("taskflow_map", "add") == [(0, 11), (1, 12), (2, 13)]
    assert xcoms("taskflow_map", "total") == [(-1, {"values": [11, 12, 13], "sum": 36})]
    assert xcoms("taskflow_map", "negate") == [(0, -11), (1, -12), (2, -13)]


def _debug(dag_id):
    with session_scope() as session:
        for t in session.scalars(select(TaskTry).where(TaskTry.dag_id == dag_id)):
            print(t.task_id, t.map_index, t.state, t.error)


OPERATORS = """
from datetime import datetime
from flowsched import DAG, BashOperator, task

with DAG("operator_map", start_date=datetime(2026, 1, 1)) as dag:
    echo = BashOperator.partial(task_id="echo", retries=0).expand(
        bash_command=["echo one", "echo two"]
    )
    templated = BashOperator.partial(
        task_id="templated", bash_command="echo index=$N/{{ ti.map_index }}"
    ).expand(env=[{"N": "a"}, {"N": "b"}, {"N": "c"}])
    kwargs = BashOperator.partial(task_id="kwargs").expand_kwargs(
        [{"bash_command": "echo k1"}, {"bash_command": "echo $V", "env": {"V": "k2"}}]
    )

    @task
    def pair(x, y):
        return f"{x}{y}"

    @task
    def kv(item):
        key, value = item
        return f"{key}={value}"

    @task
    def make_dict():
        return {"b": 2, "a": 1}

    @task
    def nothing():
        return []

    @task
    def never(x):
        return x

    @task(trigger_rule="all_done")
    def after_nothing(values):
        return "ran"

    crossed = pair.expand(x=[1, 2], y=["a", "b", "c"])
    kvs = kv.expand(item=make_dict())
    empty = never.expand(x=nothing())
    blocked = never.override(task_id="blocked")(empty)
"""


def test_operators_literals_cross_product_dicts_kwargs_and_zero_length(home):
    home.write_dag("operator_map.py", OPERATORS)
    parse()
    operations.trigger_dag("operator_map")
    drive(run_finished("operator_map"))
    assert xcoms("operator_map", "echo") == [(0, "one"), (1, "two")]
    # {{ ti.map_index }} renders per copy; mapped env reaches each copy.
    assert xcoms("operator_map", "templated") == [
        (0, "index=a/0"),
        (1, "index=b/1"),
        (2, "index=c/2"),
    ]
    assert xcoms("operator_map", "kwargs") == [(0, "k1"), (1, "k2")]
    # Cross product, the last argument varying fastest (Airflow's order).
    assert [v for _, v in xcoms("operator_map", "pair")] == ["1a", "1b", "1c", "2a", "2b", "2c"]
    # A dict maps as (key, value) pairs, in the order of its stored JSON (keys sorted).
    assert [v for _, v in xcoms("operator_map", "kv")] == ["a=1", "b=2"]
    # Mapping over an empty list skips the task (map_index stays -1), and the skip flows.
    assert copies("operator_map", "never") == [(-1, "skipped", 1)]
    assert errors("operator_map", "never") == ["mapped over nothing: 0 items"]
    assert copies("operator_map", "blocked") == [(-1, "skipped", 0)]
    assert run_state("operator_map") == "success"


def test_authoring_errors_name_the_task_and_argument(sqlite_home):
    from flowsched import DAG, BashOperator
    from flowsched.exceptions import DagDefinitionError

    with DAG("bad_map"):
        wrong_type = r"'m1'.*unexpected type 'int'.*'bash_command'"
        with pytest.raises(DagDefinitionError, match=wrong_type):
            BashOperator.partial(task_id="m1").expand(bash_command=3)
        with pytest.raises(DagDefinitionError, match="'m2': no arguments to expand against"):
            BashOperator.partial(task_id="m2").expand()
        with pytest.raises(DagDefinitionError, match="'m3': cannot map over 'retries'"):
            BashOperator.partial(task_id="m3", bash_command="true").expand(retries=[1, 2])
        with pytest.raises(DagDefinitionError, match="'m4': 'env' given to both"):
            BashOperator.partial(task_id="m4", env={}).expand(env=[{}])
        with pytest.raises(DagDefinitionError, match="item 1 is a str"):
            BashOperator.partial(task_id="m5").expand_kwargs([{"bash_command": "x"}, "y"])
        with pytest.raises(DagDefinitionError, match="needs task_id"):
            BashOperator.partial(bash_command="true")


LIMITS = """
from datetime import datetime
from flowsched import DAG, task

with DAG("map_limits", start_date=datetime(2026, 1, 1)) as dag:
    @task
    def too_many():
        return [1, 2, 3, 4, 5]

    @task
    def scalar():
        return 7

    @task
    def use(x):
        return x

    use.override(task_id="long")(x=1)
    use.override(task_id="over_long").expand(x=too_many())
    use.override(task_id="over_scalar").expand(x=scalar())
"""


def test_max_map_length_and_unmappable_values_fail_the_upstream(home):
    home.configure(core={"max_map_length": "3"})
    home.write_dag("map_limits.py", LIMITS)
    parse()
    operations.trigger_dag("map_limits")
    drive(run_finished("map_limits"))
    assert copies("map_limits", "too_many") == [(-1, "failed", 1)]
    [error] = errors("map_limits", "too_many")
    assert "unmappable return value length: 5 > 3 ([core] max_map_length" in error
    [error] = errors("map_limits", "scalar")
    assert "unmappable return type 'int'" in error and "'over_scalar'" in error
    assert copies("map_limits", "over_long") == [(-1, "upstream_failed", 0)]
    assert run_state("map_limits") == "failed"


def test_literal_longer_than_max_map_length_is_an_import_error(sqlite_home):
    from flowsched.dag_processor import process_folder

    sqlite_home.configure(core={"max_map_length": "2"})
    sqlite_home.write_dag(
        "too_long.py",
        "from datetime import datetime\n"
        "from flowsched import DAG, BashOperator\n"
        "with DAG('too_long', start_date=datetime(2026, 1, 1)):\n"
        "    BashOperator.partial(task_id='wide').expand(bash_command=['a', 'b', 'c'])\n",
    )
    report = process_folder()
    [error] = report.errors
    assert "task 'wide': unmappable length 3 > 2 ([core] max_map_length)" in error


RETRIES = """
from datetime import datetime
from pathlib import Path
from flowsched import DAG, task

MARKER = Path({marker!r})

with DAG("map_retries", start_date=datetime(2026, 1, 1)) as dag:
    @task(retries=1, retry_delay=0)
    def flaky(x):
        if x == 2 and not MARKER.exists():
            MARKER.write_text("failed once")
            raise RuntimeError("first try of copy 1 fails")
        return x * 10

    @task
    def gather(values):
        return list(values)

    gather(flaky.expand(x=[1, 2, 3]))
"""


def test_retry_and_clear_one_index(home):
    home.write_dag("map_retries.py", RETRIES.format(marker=str(home.root / "marker")))
    parse()
    run = operations.trigger_dag("map_retries")
    drive(run_finished("map_retries"))
    assert run_state("map_retries") == "success"
    # Only the failing copy spent a retry.
    assert copies("map_retries", "flaky") == [
        (0, "success", 1),
        (1, "success", 2),
        (2, "success", 1),
    ]
    assert xcoms("map_retries", "gather") == [(-1, [10, 20, 30])]
    # Clear one copy: it alone runs again, and the reduce step after it (downstream).
    cleared = operations.clear_tasks(
        "map_retries", task_regex="^flaky$", run_id=run.run_id, map_indexes=[2], downstream=True
    )
    assert cleared.cleared == [(run.run_id, "flaky"), (run.run_id, "gather")]
    drive(run_finished("map_retries"))
    assert copies("map_retries", "flaky") == [
        (0, "success", 1),
        (1, "success", 2),
        (2, "success", 2),
    ]
    assert copies("map_retries", "gather") == [(-1, "success", 2)]
    assert xcoms("map_retries", "gather") == [(-1, [10, 20, 30])]


def _ran_retries_dag(home):
    home.write_dag("map_retries.py", RETRIES.format(marker=str(home.root / "marker")))
    home.root.joinpath("marker").write_text("no failure this time")
    parse()
    operations.trigger_dag("map_retries", run_id="r1")
    drive(run_finished("map_retries"))


def test_grid_and_task_page_show_mapped_tasks_and_clear_one(sqlite_home):
    import re

    from tests.web.conftest import csrf_of, make_web

    _ran_retries_dag(sqlite_home)
    web = make_web(sqlite_home)
    client = web.client("op")
    grid = client.get("/dags/map_retries").text
    # One square per mapped task and run, its copies counted; the row marked mapped.
    assert re.search(r'class="cell s-success"[^>]*data-mapped="3"[^>]*3 mapped tasks', grid)
    assert re.search(r'flaky <span class="muted small mapped-mark">\[ \]</span>', grid)
    page = client.get("/dags/map_retries/runs/r1/tasks/flaky?map_index=1").text
    assert '<span class="mono" id="map-index">[1]</span>' in page
    assert "1 of 3 mapped tasks" in page
    links = re.findall(r"/dags/map_retries/runs/r1/tasks/flaky\?map_index=(\d)", page)
    assert sorted(set(links)) == ["0", "1", "2"]
    assert "/tasks/flaky/log?try=1&amp;map_index=1" in page  # this copy's log
    cleared = client.post(
        "/dags/map_retries/clear",
        data={
            "run_id": "r1",
            "task_id": "flaky",
            "map_index": "1",
            "csrf_token": csrf_of(client),
            "next": "/dags/map_retries",
        },
    )
    assert cleared.status_code == 302
    assert copies("map_retries", "flaky") == [(0, "success", 1), (1, "none", 1), (2, "success", 1)]
    graph = client.get("/dags/map_retries/graph?run_id=r1").text
    assert re.search(r'<g class="node s-[a-z_]+ mapped" data-task-id="flaky">', graph)
    assert "flaky [ ]</text>" in graph
    run_page = client.get("/dags/map_retries/runs/r1").text
    rows = re.findall(r'<tr data-task-id="(\w+)"(?: data-map-index="(\d)")?>', run_page)
    assert rows == [("flaky", "0"), ("flaky", "1"), ("flaky", "2"), ("gather", "")]
    assert "/tasks/flaky?map_index=2" in run_page
    unmapped = client.get("/dags/map_retries/runs/r1/tasks/gather").text
    assert 'id="map-index"' not in unmapped and "mapped-tasks" not in unmapped


def test_browser_grid_square_leads_to_a_mapped_copy(sqlite_home, browser):
    from playwright.sync_api import expect

    from flowsched.web.users import create_user
    from tests.web.test_e2e import PASSWORD, Stack, log_in, new_page

    _ran_retries_dag(sqlite_home)
    create_user("mia", PASSWORD, "viewer")
    stack = Stack(sqlite_home)
    try:
        base = stack.webserver()
        page = new_page(browser)
        log_in(page, base, "mia")
        page.goto(f"{base}/dags/map_retries")
        square = page.locator('tr[data-task-id="flaky"] a.cell')
        expect(square).to_have_attribute("data-mapped", "3")
        square.click()
        expect(page.locator("#map-index")).to_have_text("[0]")
        page.locator("#mapped-tasks a", has_text="2").click()
        expect(page.locator("#map-index")).to_have_text("[2]")
        expect(page.locator("#mapped-tasks tr.current td").first).to_have_text("2")
        page.close()
    finally:
        stack.stop()


def test_map_index_in_cli_and_api(sqlite_home):
    from tests.test_cli import flowsched
    from tests.web.conftest import make_web
    from tests.web.openapi_check import check

    home = sqlite_home
    _ran_retries_dag(home)

    states = flowsched(home, "tasks", "states", "map_retries", "r1").stdout
    assert [f"flaky[{i}]" in states for i in range(3)] == [True] * 3
    assert "flaky[3]" not in states
    out = flowsched(home, "tasks", "run", "map_retries", "flaky", "r1", "--map-index", "1")
    assert "flaky[1] try 2: success" in out.stdout
    log = flowsched(home, "tasks", "log", "map_retries", "flaky", "r1", "--map-index", "1")
    assert "map_index=1" in log.stdout and "try=2" in log.stdout
    missing = flowsched(home, "tasks", "run", "map_retries", "flaky", "r1", check=False)
    assert missing.returncode != 0 and "a mapped task: give --map-index" in missing.stderr
    cleared = flowsched(
        home,
        "tasks",
        "clear",
        "map_retries",
        "--task",
        "^flaky$",
        "--run",
        "r1",
        "--map-index",
        "0",
        "--dry-run",
    ).stdout
    assert "would clear 1 task instance(s)" in cleared
    assert copies("map_retries", "flaky") == [
        (0, "success", 1),
        (1, "success", 2),
        (2, "success", 1),
    ]

    web = make_web(home)
    client = web.client()
    op = web.api("op")
    base = "/api/v1/dags/map_retries/runs/r1/tasks"
    listed = check(client.get(f"{base}/flaky/listMapped", headers=op))
    assert [ti["map_index"] for ti in listed["task_instances"]] == [0, 1, 2]
    assert listed["total_entries"] == 3
    one = check(client.get(f"{base}/flaky/1", headers=op))
    assert (one["map_index"], one["try_number"], len(one["tries"])) == (1, 2, 2)
    assert client.get(f"{base}/flaky/7", headers=op).status_code == 404
    every = check(client.get(base, headers=op))["task_instances"]
    assert sorted((ti["task_id"], ti["map_index"]) for ti in every) == [
        ("flaky", 0),
        ("flaky", 1),
        ("flaky", 2),
        ("gather", -1),
    ]
    done = check(
        client.post(
            "/api/v1/dags/map_retries/clear",
            json={"dag_run_id": "r1", "task_ids": [["flaky", 2]]},
            headers=op,
        )
    )
    assert done["cleared"] == [{"run_id": "r1", "task_id": "flaky"}]
    assert copies("map_retries", "flaky") == [(0, "success", 1), (1, "success", 2), (2, "none", 1)]
    bad = client.post(
        "/api/v1/dags/map_retries/clear", json={"task_ids": [["flaky", "x"]]}, headers=op
    )
    assert bad.status_code == 400 and "[task_id, map_index] pairs" in check(bad)["detail"]


def test_example_dynamic_task_mapping_dag_runs(sqlite_home):
    import shutil
    from pathlib import Path

    import flowsched

    example = Path(flowsched.__file__).parent / "example_dags" / "example_dynamic_task_mapping.py"
    shutil.copy(example, sqlite_home.dags / example.name)
    parse()
    operations.trigger_dag("example_dynamic_task_mapping")
    drive(run_finished("example_dynamic_task_mapping"))
    assert run_state("example_dynamic_task_mapping") == "success"
    assert xcoms("example_dynamic_task_mapping", "double") == [(0, 4), (1, 6), (2, 8)]
    assert xcoms("example_dynamic_task_mapping", "total") == [(-1, 18)]
    assert xcoms("example_dynamic_task_mapping", "echo") == [
        (0, "copy 0: alpha"),
        (1, "copy 1: beta"),
    ]
