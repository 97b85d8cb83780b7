"""Skipping and branching end to end, through a real scheduler and task processes.

Each runs on SQLite and on MariaDB (the ``home`` fixture); the states asserted
are the ones Airflow gives the same DAG.
"""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select

from flowsched import operations
from flowsched.timezone import utcnow
from tests.harness import drive, parse, run_finished, run_state, ti_states, tries


def states_of(dag_id: str) -> dict[str, str]:
    return {task: state for task, (state, _) in ti_states(dag_id).items()}


SKIPPING = """
from datetime import datetime
from flowsched import DAG, BashOperator, PythonOperator, SkipTask

def skip_me():
    raise SkipTask("nothing to do today")

with DAG("skipping", start_date=datetime(2026, 1, 1)) as dag:
    ok = BashOperator(task_id="ok", bash_command="true")
    skipper = PythonOperator(task_id="skipper", python_callable=skip_me, retries=2)
    exit99 = BashOperator(task_id="exit99", bash_command="echo before; exit 99")
    exit3 = BashOperator(task_id="exit3", bash_command="exit 3", skip_on_exit_code=[3, 4])
    strict = BashOperator(task_id="strict", bash_command="true")
    after_strict = BashOperator(task_id="after_strict", bash_command="true")
    min_one = BashOperator(task_id="min_one", bash_command="true",
                           trigger_rule="none_failed_min_one_success")
    none_skipped = BashOperator(task_id="none_skipped", bash_command="true",
                                trigger_rule="none_skipped")
    all_skipped = BashOperator(task_id="all_skipped", bash_command="true",
                               trigger_rule="all_skipped")
    all_skipped_not = BashOperator(task_id="all_skipped_not", bash_command="true",
                                   trigger_rule="all_skipped")
    always = BashOperator(task_id="always", bash_command="true", trigger_rule="always")
    [ok, skipper] >> strict >> after_strict
    [ok, skipper] >> min_one
    [ok, skipper] >> none_skipped
    [exit99, exit3] >> all_skipped
    [ok, exit99] >> all_skipped_not
    [skipper, exit3] >> always
"""


def test_skip_task_and_exit_code_skip_and_propagate_as_in_airflow(home):
    home.write_dag("skipping.py", SKIPPING)
    parse()
    operations.trigger_dag("skipping")
    drive(run_finished("skipping"))
    assert states_of("skipping") == {
        "ok": "success",
        "skipper": "skipped",
        "exit99": "skipped",
        "exit3": "skipped",
        "strict": "skipped",  # all_success below a skip is skipped...
        "after_strict": "skipped",  # ...and so on down the line
        "min_one": "success",
        "none_skipped": "skipped",
        "all_skipped": "success",
        "all_skipped_not": "skipped",
        "always": "success",
    }
    assert run_state("skipping") == "success"  # skipped leaves do not fail a run
    history = tries("skipping", "skipper")
    # A skip is the end of the task: one try, no retry spent although retries=2.
    assert [(t.try_number, t.state) for t in history] == [(1, "skipped")]
    assert history[0].error == "nothing to do today"
    assert tries("skipping", "exit99")[0].error == "Bash command returned exit code 99. Skipping."
    # Trigger-rule skips never reach a worker: no try at all.
    assert ti_states("skipping")["strict"] == ("skipped", 0)


BRANCHING = """
from datetime import datetime
from flowsched import DAG, BashOperator, BranchPythonOperator, EmptyOperator, task

with DAG("branching", start_date=datetime(2026, 1, 1)) as dag:
    pick = BranchPythonOperator(task_id="pick", python_callable=lambda: "left")
    left = BashOperator(task_id="left", bash_command="echo left")
    right = BashOperator(task_id="right", bash_command="echo right")
    right_next = BashOperator(task_id="right_next", bash_command="true")
    join = EmptyOperator(task_id="join", trigger_rule="none_failed_min_one_success")
    strict_join = BashOperator(task_id="strict_join", bash_command="true")
    pick >> [left, right]
    right >> right_next
    [left, right_next] >> join
    [left, right_next] >> strict_join

    @task.branch
    def choose(n=2):
        return (f"option_{i}" for i in range(n))  # a generator, as some DAGs return

    options = [BashOperator(task_id=f"option_{i}", bash_command="true") for i in range(3)]
    # An empty branch: "done" is both chosen-path downstream and a direct downstream.
    @task.branch
    def nothing():
        return None

    chosen = choose()
    chosen >> options
    none_chosen = nothing()
    after_none = BashOperator(task_id="after_none", bash_command="true")
    none_chosen >> after_none

    @task.branch
    def only_a():
        return "a"

    a = BashOperator(task_id="a", bash_command="true")
    done = BashOperator(task_id="done", bash_command="true")
    picked = only_a()
    picked >> [a, done]
    a >> done
"""


def test_branching_follows_the_chosen_tasks_and_skips_the_others(home):
    home.write_dag("branching.py", BRANCHING)
    parse()
    operations.trigger_dag("branching")
    drive(run_finished("branching"))
    states = states_of("branching")
    assert states == {
        "pick": "success",
        "left": "success",
        "right": "skipped",
        "right_next": "skipped",
        "join": "success",
        "strict_join": "skipped",
        "choose": "success",
        "option_0": "success",
        "option_1": "success",
        "option_2": "skipped",
        "nothing": "success",
        "after_none": "skipped",
        "only_a": "success",
        "a": "success",
        "done": "success",  # downstream of the chosen 'a': followed, not skipped
    }
    # The branch's choice is its XCom (a generator became a list).
    from flowsched.db.engine import session_scope
    from flowsched.db.models import XCom

    with session_scope() as session:
        chosen = session.scalar(select(XCom.value).where(XCom.task_id == "choose"))
    assert chosen == ["option_0", "option_1"]
    # EmptyOperator was never sent to a worker: success without a try.
    assert ti_states("branching")["join"] == ("success", 0)
    assert tries("branching", "join") == []
    assert run_state("branching") == "success"


BAD_BRANCH = """
from datetime import datetime
from flowsched import DAG, BashOperator, task

with DAG("bad_branch", start_date=datetime(2026, 1, 1)) as dag:
    @task.branch
    def pick():
        return "nowhere"

    pick() >> BashOperator(task_id="there", bash_command="true")
"""


def test_branch_to_an_unknown_task_fails_and_skips_nothing(home):
    home.write_dag("bad_branch.py", BAD_BRANCH)
    parse()
    operations.trigger_dag("bad_branch")
    drive(run_finished("bad_branch"))
    assert states_of("bad_branch") == {"pick": "failed", "there": "upstream_failed"}
    error = tries("bad_branch", "pick")[0].error
    assert "must contain only valid task_ids" in error and "nowhere" in error


SHORT_CIRCUIT = """
from datetime import datetime
from flowsched import DAG, BashOperator, ShortCircuitOperator, task

with DAG("short", start_date=datetime(2026, 1, 1)) as dag:
    gate = ShortCircuitOperator(task_id="gate", python_callable=lambda: 0)
    g1 = BashOperator(task_id="g1", bash_command="true")
    g2 = BashOperator(task_id="g2", bash_command="true", trigger_rule="all_done")
    gate >> g1 >> g2

    @task.short_circuit(ignore_downstream_trigger_rules=False)
    def soft_gate():
        return []

    s1 = BashOperator(task_id="s1", bash_command="true")
    s2 = BashOperator(task_id="s2", bash_command="true", trigger_rule="all_done")
    soft_gate() >> s1 >> s2

    @task.short_circuit
    def open_gate():
        return {"go": True}

    o1 = BashOperator(task_id="o1", bash_command="true")
    open_gate() >> o1
"""


def test_short_circuit_skips_downstream_with_and_without_trigger_rules(home):
    home.write_dag("short.py", SHORT_CIRCUIT)
    parse()
    operations.trigger_dag("short")
    drive(run_finished("short"))
    assert states_of("short") == {
        "gate": "success",
        "g1": "skipped",
        "g2": "skipped",  # ignore_downstream_trigger_rules=True: all of downstream
        "soft_gate": "success",
        "s1": "skipped",
        "s2": "success",  # only direct downstream skipped; all_done then runs
        "open_gate": "success",
        "o1": "success",
    }


LATEST_ONLY = """
from datetime import datetime, timedelta
from flowsched import DAG, BashOperator, LatestOnlyOperator

with DAG("latest", schedule=timedelta(hours=1), start_date=datetime(2026, 1, 1),
         catchup=False) as dag:
    latest = LatestOnlyOperator(task_id="latest_only")
    work = BashOperator(task_id="work", bash_command="true")
    latest >> work
"""


def test_latest_only_skips_old_scheduled_runs_and_lets_manual_runs_through(home):
    from flowsched.db.engine import session_scope
    from flowsched.db.models import DagRun

    home.write_dag("latest.py", LATEST_ONLY)
    parse()
    old = utcnow().replace(minute=0, second=0, microsecond=0) - timedelta(days=3)
    [backfilled] = operations.backfill("latest", old, old)
    manual = operations.trigger_dag("latest")
    operations.set_paused("latest", False)

    def scheduled_run_finished() -> bool:
        with session_scope() as session:
            states = session.scalars(
                select(DagRun.state).where(
                    DagRun.dag_id == "latest", DagRun.run_type == "scheduled"
                )
            ).all()
        return bool(states) and all(state in ("success", "failed") for state in states)

    def all_finished() -> bool:
        return (
            scheduled_run_finished()
            and run_finished("latest", manual.run_id)()
            and run_finished("latest", backfilled)()
        )

    drive(all_finished)
    assert states_of_run("latest", backfilled) == {"latest_only": "success", "work": "skipped"}
    assert states_of_run("latest", manual.run_id) == {"latest_only": "success", "work": "success"}
    with session_scope() as session:
        [latest_run] = session.scalars(
            select(DagRun.run_id).where(DagRun.dag_id == "latest", DagRun.run_type == "scheduled")
        ).all()
    assert states_of_run("latest", latest_run) == {"latest_only": "success", "work": "success"}


def states_of_run(dag_id: str, run_id: str) -> dict[str, str]:
    return {task: state for task, (state, _) in ti_states(dag_id, run_id).items()}


# Long enough for `slow` to be running when it passes, even on a loaded CI
# machine (3 s was not: `slow` was skipped before it started, at load 13).
TIMEOUT = """
from datetime import datetime, timedelta
from flowsched import DAG, BashOperator

with DAG("run_timeout", start_date=datetime(2026, 1, 1),
         dagrun_timeout=timedelta(seconds=10)) as dag:
    quick = BashOperator(task_id="quick", bash_command="true")
    slow = BashOperator(task_id="slow", bash_command="sleep 60")
    after = BashOperator(task_id="after", bash_command="true")
    quick >> slow >> after
"""


def test_dagrun_timeout_fails_the_run_and_skips_what_is_unfinished(home):
    import os

    from tests.harness import wait_for

    home.write_dag("run_timeout.py", TIMEOUT)
    parse()
    run = operations.trigger_dag("run_timeout")
    drive(run_finished("run_timeout"), timeout=60)
    assert run_state("run_timeout") == "failed"
    assert states_of("run_timeout") == {"quick": "success", "slow": "skipped", "after": "skipped"}
    [slow_try] = tries("run_timeout", "slow")
    assert slow_try.state == "skipped"
    assert slow_try.error == "dagrun_timeout of 0:00:10 exceeded"
    assert slow_try.pid is not None, "slow had not started when the timeout passed"

    def gone() -> bool:
        try:
            os.kill(slow_try.pid, 0)
        except ProcessLookupError:
            return True
        return False

    # The running try noticed at its next heartbeat and stopped (no orphan `sleep 60`).
    wait_for(gone, timeout=30)
    assert run.run_id


def test_example_branches_dag_takes_one_path(home):
    import shutil
    from pathlib import Path

    import flowsched

    example = Path(flowsched.__file__).parent / "example_dags" / "example_branches.py"
    shutil.copy(example, home.dags / example.name)
    parse()
    run = operations.trigger_dag("example_branches")
    drive(run_finished("example_branches", run.run_id))
    # (the DAG is hourly: a scheduled run may run beside this one)
    states = states_of_run("example_branches", run.run_id)
    hour = run.logical_date.astimezone(home_zone()).hour
    taken, skipped = (
        ("full_load", "incremental_load") if hour % 2 == 0 else ("incremental_load", "full_load")
    )
    assert (states[taken], states[skipped]) == ("success", "skipped"), (hour, run.logical_date)
    assert states["join"] == "success", states
    day = run.logical_date.astimezone(home_zone()).day
    # ShortCircuit with ignore_downstream_trigger_rules=True skips cleanup on the 1st too.
    expected = ("skipped", "skipped") if day == 1 else ("success", "success")
    assert (states["publish"], states["cleanup"]) == expected
    assert run_state("example_branches", run.run_id) == "success"


def home_zone():
    from flowsched.timezone import default_timezone

    return default_timezone()


RECHOOSE = """
from datetime import datetime
from pathlib import Path
from flowsched import DAG, BashOperator, task

with DAG("rechoose", start_date=datetime(2026, 1, 1)) as dag:
    @task.branch
    def pick():
        return Path({choice!r}).read_text().strip()

    left = BashOperator(task_id="left", bash_command="echo left")
    right = BashOperator(task_id="right", bash_command="echo right")
    pick() >> [left, right]
"""


def test_clearing_a_branch_lets_it_choose_again(home):
    choice = home.root / "choice"
    choice.write_text("left")
    home.write_dag("rechoose.py", RECHOOSE.format(choice=str(choice)))
    parse()
    run = operations.trigger_dag("rechoose")
    drive(run_finished("rechoose", run.run_id))
    assert states_of_run("rechoose", run.run_id) == {
        "pick": "success",
        "left": "success",
        "right": "skipped",
    }
    choice.write_text("right")
    cleared = operations.clear_tasks(
        "rechoose", run_id=run.run_id, task_regex="^pick$", downstream=True
    )
    assert sorted(task for _, task in cleared.cleared) == ["left", "pick", "right"]
    drive(run_finished("rechoose", run.run_id))
    assert ti_states("rechoose", run.run_id) == {
        "pick": ("success", 2),
        "left": ("skipped", 1),  # ran in the first choice; skipped by the second
        "right": ("success", 1),
    }
