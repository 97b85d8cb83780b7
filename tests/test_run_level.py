"""Run-level behaviour with Airflow's semantics, on SQLite and MariaDB.

depends_on_past / wait_for_downstream / ignore_first_depends_on_past,
max_active_tasks, max_active_tis_per_dag, pool_slots and weight_rule: all
decided by the scheduler from the serialized DAG, with the reason a task waits
shown by ``tasks failed-deps``.
"""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from click.testing import CliRunner
from sqlalchemy import select, update

from flowsched import BashOperator, operations
from flowsched.cli.main import cli
from flowsched.dag import DAG
from flowsched.db.engine import session_scope
from flowsched.db.models import DagRun, TaskInstance
from flowsched.exceptions import DagDefinitionError
from flowsched.scheduler.past_dependence import past_blockers
from flowsched.scheduler.runs import latest_version
from flowsched.serialization import SerializedDAG
from flowsched.state import TaskState
from tests.harness import drive, parse, run_state, ti_states, tries

DAY1 = datetime(2026, 1, 1, tzinfo=UTC)
DAY2 = datetime(2026, 1, 2, tzinfo=UTC)


def _state(dag_id: str, run_id: str, task_id: str) -> str:
    return ti_states(dag_id, run_id)[task_id][0]


PAST = """
from datetime import datetime
from flowsched import DAG, BashOperator

with DAG("past", start_date=datetime(2026, 1, 1)) as dag:
    gate = BashOperator(task_id="gate", bash_command="test ! -e {marker}", depends_on_past=True)
    after = BashOperator(task_id="after", bash_command="true")
    gate >> after
"""


def test_depends_on_past_holds_a_task_until_its_previous_instance_succeeds(home):
    marker = home.root / "fail-gate"
    marker.write_text("")
    home.write_dag("past.py", PAST.format(marker=marker))
    parse()
    first = operations.trigger_dag("past", logical_date=DAY1)
    second = operations.trigger_dag("past", logical_date=DAY2)
    scheduler = drive(lambda: run_state("past", first.run_id) == "failed", timeout=60)
    for _ in range(3):
        scheduler.run_once()
    # The previous 'gate' failed: this run's 'gate' stays unscheduled, with the reason.
    assert _state("past", second.run_id, "gate") == "none"
    [dep] = operations.failed_deps("past", second.run_id, "gate")
    assert dep.name == "Previous Dagrun State"
    assert "is in the state 'failed' which is not a successful state" in dep.reason
    out = CliRunner().invoke(cli, ["tasks", "failed-deps", "past", "gate", second.run_id])
    assert out.exit_code == 0, out.output
    assert "Previous Dagrun State: depends_on_past is true" in out.output
    states = CliRunner().invoke(cli, ["tasks", "states", "past", second.run_id])
    assert states.exit_code == 0, states.output
    assert "waiting for" in states.output
    assert "Previous Dagrun State: depends_on_past is true" in states.output

    # Fixed and marked success by hand: the next run goes ahead.
    marker.unlink()
    operations.mark_task("past", first.run_id, "gate", TaskState.SUCCESS)
    drive(lambda: run_state("past", second.run_id) == "success", timeout=60)
    assert _state("past", second.run_id, "after") == "success"
    assert operations.failed_deps("past", second.run_id, "gate")[0].name == "Task Instance State"


DOWNSTREAM = """
from datetime import datetime
from flowsched import DAG, BashOperator

with DAG("wfd", start_date=datetime(2026, 1, 1)) as dag:
    head = BashOperator(task_id="head", bash_command="true", wait_for_downstream=True)
    slow = BashOperator(task_id="slow", bash_command="sleep 2")
    head >> slow
"""


def test_wait_for_downstream_waits_for_the_previous_runs_direct_downstream(home):
    home.write_dag("wfd.py", DOWNSTREAM)
    parse()
    first = operations.trigger_dag("wfd", logical_date=DAY1)
    second = operations.trigger_dag("wfd", logical_date=DAY2)
    reasons: list[str] = []

    def watch() -> bool:
        if _state("wfd", second.run_id, "head") == "none":
            reasons.extend(d.reason for d in operations.failed_deps("wfd", second.run_id, "head"))
        return run_state("wfd", second.run_id) == "success"

    drive(watch, timeout=60)
    first_slow = next(t for t in tries("wfd", "slow") if t.run_id == first.run_id)
    second_head = next(t for t in tries("wfd", "head") if t.run_id == second.run_id)
    # Not a timing assertion: an order. The second head began after the first slow ended.
    assert second_head.start_date >= first_slow.end_date
    assert any("wait_for_downstream is True" in reason for reason in reasons)


IGNORE_FIRST_V1 = """
from datetime import datetime
from flowsched import DAG, BashOperator

with DAG("first", start_date=datetime(2026, 1, 1)) as dag:
    BashOperator(task_id="old", bash_command="true")
"""

IGNORE_FIRST_V2 = """
from datetime import datetime
from flowsched import DAG, BashOperator

with DAG("first", start_date=datetime(2026, 1, 1)) as dag:
    BashOperator(task_id="old", bash_command="true")
    BashOperator(task_id="added", bash_command="true", depends_on_past=True,
                 ignore_first_depends_on_past={ignore})
"""


@pytest.mark.parametrize("ignore", [True, False])
def test_ignore_first_depends_on_past_for_a_task_added_since_the_previous_run(home, ignore):
    home.write_dag("first.py", IGNORE_FIRST_V1)
    parse()
    operations.trigger_dag("first", logical_date=DAY1)
    home.write_dag("first.py", IGNORE_FIRST_V2.format(ignore=ignore))
    parse()
    second = operations.trigger_dag("first", logical_date=DAY2)
    with session_scope() as session:
        _, version = latest_version(session, "first")
        dag = SerializedDAG(version.serialized)
        run = session.scalar(select(DagRun).where(DagRun.run_id == second.run_id))
        held = past_blockers(session, run, dag, ["added", "old"])
    if ignore:
        assert held == {}
    else:
        assert held == {
            "added": "depends_on_past is true for this task's DAG, but the previous task "
            "instance has not run yet."
        }


CONCURRENCY = """
from datetime import datetime
from flowsched import DAG, BashOperator

with DAG("busy", start_date=datetime(2026, 1, 1), max_active_tasks=2) as dag:
    for n in range(5):
        BashOperator(task_id=f"t{n}", bash_command="sleep 0.5")

with DAG("single", start_date=datetime(2026, 1, 1)) as single:
    BashOperator(task_id="only", bash_command="sleep 0.5", max_active_tis_per_dag=1)
"""


def test_max_active_tasks_and_max_active_tis_per_dag_limit_what_runs_at_once(home):
    home.write_dag("busy.py", CONCURRENCY)
    parse()
    operations.trigger_dag("busy")
    runs = [operations.trigger_dag("single", logical_date=day) for day in (DAY1, DAY2)]
    runs.append(operations.trigger_dag("single", logical_date=datetime(2026, 1, 3, tzinfo=UTC)))
    busy_peak, single_peak = [0], [0]

    def active(dag_id: str) -> int:
        with session_scope() as session:
            return len(
                session.scalars(
                    select(TaskInstance.id).where(
                        TaskInstance.dag_id == dag_id,
                        TaskInstance.state.in_(["queued", "running"]),
                    )
                ).all()
            )

    def finished() -> bool:
        busy_peak.append(active("busy"))
        single_peak.append(active("single"))
        done = run_state("busy") == "success"
        return done and all(run_state("single", run.run_id) == "success" for run in runs)

    drive(finished, timeout=90, parallelism=6)
    assert max(busy_peak) == 2
    assert max(single_peak) == 1


POOL_SLOTS = """
from datetime import datetime
from flowsched import DAG, BashOperator

with DAG("slots", start_date=datetime(2026, 1, 1)) as dag:
    for n in range(2):
        BashOperator(task_id=f"heavy{n}", bash_command="sleep 0.5", pool="three", pool_slots=2)
    for n in range(2):
        BashOperator(task_id=f"light{n}", bash_command="sleep 0.5", pool="three")
    BashOperator(task_id="huge", bash_command="true", pool="three", pool_slots=4)
"""


def test_pool_slots_count_against_the_pool_and_too_big_a_try_waits_with_a_reason(home):
    home.write_dag("slots.py", POOL_SLOTS)
    parse()
    operations.set_pool("three", 3, "three slots")
    run = operations.trigger_dag("slots")
    weights = {"heavy0": 2, "heavy1": 2, "light0": 1, "light1": 1}
    peak = [0]

    def others_done() -> bool:
        states = ti_states("slots", run.run_id)
        peak.append(sum(w for t, w in weights.items() if states[t][0] in ("queued", "running")))
        return all(states[t][0] == "success" for t in weights)

    scheduler = drive(others_done, timeout=60, parallelism=4)
    assert max(peak) == 3  # e.g. one heavy and one light; never two heavy ones
    scheduler.run_once()
    assert _state("slots", run.run_id, "huge") == "scheduled"
    [dep] = operations.failed_deps("slots", run.run_id, "huge")
    assert dep.reason == (
        "requested pool slots (4) are greater than total pool slots (3) for pool 'three'"
    )
    # `pools list` counts slots, not tries: one running heavy try takes two.
    with session_scope() as session:
        session.execute(
            update(TaskInstance)
            .where(TaskInstance.run_id == run.run_id, TaskInstance.task_id == "heavy0")
            .values(state="running")
        )
    assert ("three", 3, 2, "three slots") in operations.list_pools()


WEIGHTS = """
from datetime import datetime
from flowsched import DAG, BashOperator

with DAG("weights", start_date=datetime(2026, 1, 1)) as dag:
    lone = BashOperator(task_id="lone", bash_command="true", priority_weight=2)
    root = BashOperator(task_id="root", bash_command="true")
    mid = BashOperator(task_id="mid", bash_command="true")
    leaf = BashOperator(task_id="leaf", bash_command="true", weight_rule="upstream")
    fixed = BashOperator(task_id="fixed", bash_command="true", priority_weight=5,
                         weight_rule="absolute")
    root >> mid >> leaf
"""


def test_weight_rule_sets_the_effective_priority_and_the_queue_order(home):
    home.write_dag("weights.py", WEIGHTS)
    parse()
    run = operations.trigger_dag("weights")
    with session_scope() as session:
        weights = dict(
            session.execute(
                select(TaskInstance.task_id, TaskInstance.priority_weight).where(
                    TaskInstance.run_id == run.run_id
                )
            ).all()
        )
    # downstream (default): own + all downstream; upstream: own + all upstream; absolute: own.
    assert weights == {"lone": 2, "root": 3, "mid": 2, "leaf": 3, "fixed": 5}
    drive(lambda: run_state("weights") == "success", timeout=60, parallelism=1)
    started = {t: tries("weights", t)[0].start_date for t in ("fixed", "root", "lone")}
    # One slot: of the tasks ready at once, the heaviest went first.
    assert started["fixed"] <= started["root"] <= started["lone"]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"weight_rule": "sideways"}, "unknown weight_rule 'sideways'"),
        ({"pool_slots": 0}, "pool_slots must be an integer >= 1, got 0"),
        ({"max_active_tis_per_dag": "2"}, "max_active_tis_per_dag must be an integer >= 1"),
    ],
)
def test_bad_run_level_arguments_are_refused_naming_the_task(kwargs, message):
    with DAG("bad"), pytest.raises(DagDefinitionError, match=f"task 't': {message}"):
        BashOperator(task_id="t", bash_command="true", **kwargs)


def test_run_level_arguments_serialize_and_default_as_airflow():
    with DAG("defaults", max_active_tasks=3, default_args={"depends_on_past": True}) as dag:
        first = BashOperator(task_id="first", bash_command="true")
        waits = BashOperator(
            task_id="waits", bash_command="true", wait_for_downstream=True, depends_on_past=False
        )
    data = dag.to_dict()
    tasks = {task["task_id"]: task for task in data["tasks"]}
    assert data["max_active_tasks"] == 3
    assert tasks["first"]["depends_on_past"] is True
    assert tasks["first"]["ignore_first_depends_on_past"] is True
    assert tasks["first"]["weight_rule"] == "downstream"
    assert tasks["first"]["pool_slots"] == 1
    # wait_for_downstream implies depends_on_past, as in Airflow.
    assert tasks["waits"]["depends_on_past"] is True
    assert first.max_active_tis_per_dag is None and waits.wait_for_downstream is True
    with pytest.raises(DagDefinitionError, match="max_active_tasks must be >= 1"):
        DAG("zero", max_active_tasks=0)


def test_concurrency_reasons_per_limit():
    from flowsched.scheduler.concurrency import Concurrency

    with DAG("limits", max_active_tasks=3) as dag:
        BashOperator(
            task_id="t",
            bash_command="true",
            pool="p",
            max_active_tis_per_dag=2,
            max_active_tis_per_dagrun=1,
        )
    serialized = SerializedDAG(dag.to_dict())
    spec = serialized.tasks["t"]
    limits = Concurrency(pool_slots={"p": 10})
    assert limits.blocker(serialized, spec, dag_run_id=1) is None
    limits.take(serialized, spec, dag_run_id=1)
    # Same run again: the per-run limit; another run: still room.
    assert limits.blocker(serialized, spec, 1) == (
        "The max task concurrency per run (1) has been reached."
    )
    assert limits.blocker(serialized, spec, 2) is None
    limits.take(serialized, spec, 2)
    assert limits.blocker(serialized, spec, 3) == "The max task concurrency (2) has been reached."
    limits.dag_active["limits"] = 3
    assert "The maximum number of running tasks (3) for this task's DAG 'limits'" in (
        limits.blocker(serialized, spec, 3) or ""
    )
    limits.pool_used["p"] = 10
    assert limits.blocker(serialized, spec, 3) == (
        "Not scheduling since there are 0 open slots in pool 'p' and require 1 pool slots"
    )
    assert Concurrency(pool_slots={}).blocker(serialized, spec, 1) == "pool 'p' does not exist"


CROWDED_POOL = """
from datetime import datetime
from flowsched import DAG, BashOperator

with DAG("crowded", start_date=datetime(2026, 1, 1)) as dag:
    for n in range(40):
        BashOperator(task_id=f"narrow{n}", bash_command="sleep 20", pool="one",
                     priority_weight=10)
    BashOperator(task_id="free", bash_command="true")
"""


def test_a_try_behind_many_held_back_by_their_pool_is_still_queued(home):
    # Two slots: the pass reads the best 2 + a margin of candidates, all of them "one"'s.
    # The try past that window must not wait for the pool's 40 tries to drain.
    home.write_dag("crowded.py", CROWDED_POOL)
    parse()
    operations.set_pool("one", 1, "one at a time")
    run = operations.trigger_dag("crowded")
    seen: list[list[str]] = []

    def free_done() -> bool:
        states = ti_states("crowded", run.run_id)
        seen.append([state for state, _ in states.values()])
        return states["free"][0] == "success"

    # (Leaving, the scheduler lets the running narrow try finish.)
    drive(free_done, timeout=60, parallelism=2)
    # When the free task was done, the first narrow one still slept, alone of its pool.
    assert seen[-1].count("success") == 1
    assert seen[-1].count("queued") + seen[-1].count("running") == 1
