"""The scheduler end to end, with real task processes, on SQLite and on MariaDB."""

from __future__ import annotations

import itertools
import time
from datetime import timedelta

from sqlalchemy import select, update

from flowsched import operations
from flowsched.db.engine import session_scope
from flowsched.db.models import Dag, DagRun, TaskInstance, XCom
from flowsched.executors.base import BaseExecutor
from flowsched.scheduler.loop import RESEND_AFTER_OUTAGE, Scheduler
from flowsched.timezone import utcnow
from flowsched.workloads import Workload
from tests.harness import drive, parse, run_finished, run_state, ti_states, tries

PIPELINE = """
from datetime import datetime
from flowsched import DAG, BashOperator, PythonOperator, task

with DAG("pipeline", start_date=datetime(2026, 1, 1)) as dag:
    @task
    def extract():
        return {"rows": [1, 2, 3]}

    @task
    def total(data):
        return sum(data["rows"])

    report = BashOperator(task_id="report",
                          bash_command="echo total={{ ti.xcom_pull('total') }} ds={{ ds }}")
    total(extract()) >> report
"""


def test_pipeline_runs_with_xcom_and_logs(home):
    home.write_dag("pipeline.py", PIPELINE)
    parse()
    run = operations.trigger_dag("pipeline", conf={"k": 1})
    drive(run_finished("pipeline"))
    assert run_state("pipeline") == "success"
    states = ti_states("pipeline")
    assert states == {t: ("success", 1) for t in ("extract", "total", "report")}
    with session_scope() as session:
        values = dict(session.execute(select(XCom.task_id, XCom.value)).all())
    assert values["extract"] == {"rows": [1, 2, 3]}
    assert values["total"] == 6
    assert values["report"].startswith("total=6 ds=")
    log = (
        home.logs / "dag_id=pipeline" / f"run_id={run.run_id}" / "task_id=report" / "attempt=1.log"
    ).read_text()
    assert "total=6" in log and "+08:00]" in log
    history = tries("pipeline", "report")
    assert [(t.try_number, t.state) for t in history] == [(1, "success")]
    assert history[0].hostname and history[0].worker_nodename.startswith("local@")
    assert history[0].rendered_fields["bash_command"].startswith("echo total=6")


FLAKY = """
from datetime import datetime
from pathlib import Path
from flowsched import DAG, BashOperator

MARKER = Path({marker!r})
with DAG("flaky", start_date=datetime(2026, 1, 1)) as dag:
    first = BashOperator(task_id="first", bash_command="echo once >> {counter}")
    flaky = BashOperator(
        task_id="flaky", retries={retries}, retry_delay=0,
        bash_command="n=$(cat {attempts} 2>/dev/null || echo 0); echo $((n+1)) > {attempts};"
                     " test -e {marker}",
    )
    after = BashOperator(task_id="after", bash_command="echo after")
    first >> flaky >> after
"""


def flaky_dag(home, retries):
    marker = home.root / "marker"
    counter = home.root / "first-count"
    attempts = home.root / "attempts"
    home.write_dag(
        "flaky.py",
        FLAKY.format(marker=str(marker), counter=counter, attempts=attempts, retries=retries),
    )
    parse()
    return marker, counter, attempts


def test_retry_policy_retries_until_success(home):
    marker, counter, attempts = flaky_dag(home, retries=3)

    class Fix:
        def __call__(self):
            # Let the second try succeed.
            if attempts.exists() and attempts.read_text().strip() == "1":
                marker.touch()
            return run_state("flaky") in ("success", "failed")

    operations.trigger_dag("flaky")
    drive(Fix())
    assert run_state("flaky") == "success"
    assert [t.state for t in tries("flaky", "flaky")] == ["failed", "success"]
    assert counter.read_text().count("once") == 1  # upstream success never re-ran


def test_failure_propagates_and_clear_reruns_from_the_failure_point(home):
    marker, counter, _ = flaky_dag(home, retries=0)
    run = operations.trigger_dag("flaky")
    drive(run_finished("flaky"))
    assert run_state("flaky") == "failed"
    assert ti_states("flaky") == {
        "first": ("success", 1),
        "flaky": ("failed", 1),
        "after": ("upstream_failed", 0),
    }
    marker.touch()
    cleared = operations.clear_tasks("flaky", run_id=run.run_id, only_failed=True, downstream=True)
    assert sorted(task for _, task in cleared.cleared) == ["after", "flaky"]
    drive(run_finished("flaky"))
    assert run_state("flaky") == "success"
    assert ti_states("flaky") == {
        "first": ("success", 1),
        "flaky": ("success", 2),
        "after": ("success", 1),
    }
    assert counter.read_text().count("once") == 1
    assert [t.state for t in tries("flaky", "flaky")] == ["failed", "success"]


RULES = """
from datetime import datetime
from flowsched import DAG, BashOperator

with DAG("rules", start_date=datetime(2026, 1, 1)) as dag:
    ok = BashOperator(task_id="ok", bash_command="true")
    bad = BashOperator(task_id="bad", bash_command="exit 3")
    strict = BashOperator(task_id="strict", bash_command="true")
    done = BashOperator(task_id="done", bash_command="true", trigger_rule="all_done")
    on_fail = BashOperator(task_id="on_fail", bash_command="true", trigger_rule="one_failed")
    any_ok = BashOperator(task_id="any_ok", bash_command="true", trigger_rule="one_success")
    after_strict = BashOperator(task_id="after_strict", bash_command="true",
                                trigger_rule="none_failed_min_one_success")
    [ok, bad] >> strict >> after_strict
    [ok, bad] >> done
    [ok, bad] >> on_fail
    [ok, bad] >> any_ok
"""


def test_trigger_rules_end_to_end(home):
    home.write_dag("rules.py", RULES)
    parse()
    operations.trigger_dag("rules")
    drive(run_finished("rules"))
    states = {task: state for task, (state, _) in ti_states("rules").items()}
    assert states == {
        "ok": "success",
        "bad": "failed",
        "strict": "upstream_failed",
        "after_strict": "upstream_failed",
        "done": "success",
        "on_fail": "success",
        "any_ok": "success",
    }
    assert run_state("rules") == "failed"  # a leaf is upstream_failed
    assert "exited with code 3" in tries("rules", "bad")[0].error


TIMEOUT = """
from datetime import datetime, timedelta
from flowsched import DAG, BashOperator
with DAG("slow", start_date=datetime(2026, 1, 1)) as dag:
    BashOperator(task_id="sleepy", bash_command="sleep 30",
                 execution_timeout=timedelta(seconds=1))
"""


def test_execution_timeout_kills_the_task(home):
    home.write_dag("slow.py", TIMEOUT)
    parse()
    operations.trigger_dag("slow")
    drive(run_finished("slow"), timeout=25)
    (try_,) = tries("slow", "sleepy")
    assert try_.state == "failed" and "execution_timeout" in try_.error
    assert try_.duration < 10


def test_zombie_is_failed_and_retried(home):
    home.write_dag("pipeline.py", PIPELINE)
    parse()
    run = operations.trigger_dag("pipeline")
    with session_scope() as session:
        ti = session.scalar(select(TaskInstance).where(TaskInstance.task_id == "extract"))
        # A try that "started" on a worker that then vanished: running, silent for 10 min.
        ti.state, ti.try_number, ti.max_tries = "running", 1, 1
        ti.last_heartbeat = ti.start_date = utcnow() - timedelta(minutes=10)
        ti.hostname = "10.9.9.9"
        session.execute(update(DagRun).values(state="running"))
    drive(run_finished("pipeline", run.run_id))
    assert ti_states("pipeline")["extract"] == ("success", 2)
    assert run_state("pipeline") == "success"


def test_stuck_queued_task_is_retried(home):
    home.write_dag("pipeline.py", PIPELINE)
    home.configure(scheduler={"task_queued_timeout": "1"})
    parse()
    operations.trigger_dag("pipeline")
    with session_scope() as session:
        ti = session.scalar(select(TaskInstance).where(TaskInstance.task_id == "extract"))
        # Queued by an executor that lost the message.
        ti.state, ti.try_number, ti.max_tries = "queued", 1, 1
        ti.queued_at = utcnow() - timedelta(minutes=5)
        session.execute(update(DagRun).values(state="running"))
    drive(run_finished("pipeline"))
    history = tries("pipeline", "extract")
    assert ti_states("pipeline")["extract"] == ("success", 2)
    assert history[-1].state == "success"


CATCHUP = """
from datetime import UTC, datetime, timedelta
from flowsched import DAG, BashOperator
with DAG("hourly", schedule=timedelta(hours=1), catchup=True, max_active_runs=2,
         start_date=datetime.now(UTC) - timedelta(hours=4, minutes=30)) as dag:
    BashOperator(task_id="t", bash_command="sleep 0.3")
"""


def test_catchup_creates_each_interval_and_honours_max_active_runs(home):
    home.write_dag("hourly.py", CATCHUP)
    parse()
    seen_running = []

    def done() -> bool:
        with session_scope() as session:
            states = session.scalars(select(DagRun.state)).all()
        seen_running.append(states.count("running"))
        return len(states) == 4 and all(s == "success" for s in states)

    drive(done, timeout=60)
    assert max(seen_running) <= 2
    with session_scope() as session:
        dag = session.get(Dag, "hourly")
        starts = sorted(session.scalars(select(DagRun.data_interval_start)).all())
    assert [(b - a) for a, b in itertools.pairwise(starts)] == [timedelta(hours=1)] * 3
    assert dag.next_run_create_after > utcnow()


def test_paused_dag_gets_no_runs(home):
    home.write_dag("hourly.py", CATCHUP)
    parse()
    operations.set_paused("hourly", True)
    scheduler = drive(lambda: True)
    for _ in range(3):
        scheduler.create_due_runs()
    with session_scope() as session:
        assert session.scalars(select(DagRun)).all() == []


def test_pool_limits_concurrency(home):
    home.write_dag(
        "wide.py",
        """
from datetime import datetime
from flowsched import DAG, BashOperator
with DAG("wide", start_date=datetime(2026, 1, 1)) as dag:
    for n in range(6):
        BashOperator(task_id=f"t{n}", bash_command="sleep 0.5", pool="narrow")
""",
    )
    parse()
    operations.set_pool("narrow", 2, "two at a time")
    operations.trigger_dag("wide")
    peak = []

    def finished() -> bool:
        states = [state for state, _ in ti_states("wide").values()]
        peak.append(sum(s in ("queued", "running") for s in states))
        return run_state("wide") == "success"

    drive(finished, parallelism=4)
    assert max(peak) == 2


def test_a_task_in_a_pool_that_does_not_exist_fails_and_its_run_ends(home):
    home.write_dag(
        "poolless.py",
        """
from datetime import datetime
from flowsched import DAG, BashOperator
with DAG("poolless", start_date=datetime(2026, 1, 1)) as dag:
    BashOperator(task_id="ok", bash_command="true")
    BashOperator(task_id="lost", bash_command="true", pool="nowhere")
""",
    )
    parse()
    operations.trigger_dag("poolless")
    drive(run_finished("poolless"))
    assert run_state("poolless") == "failed"
    assert ti_states("poolless") == {"ok": ("success", 1), "lost": ("failed", 0)}
    assert tries("poolless", "lost") == []  # never queued: no try was opened


class _Recording(BaseExecutor):
    """An executor that keeps what it is given (as a broker would) and runs nothing."""

    def __init__(self) -> None:
        super().__init__()
        self.sent: list[Workload] = []

    def queue(self, workload: Workload) -> None:
        self.sent.append(workload)

    def slots_available(self) -> int:
        return 16


def test_queued_tries_are_sent_again_once_after_a_database_outage(home):
    home.write_dag("pipeline.py", PIPELINE)
    parse()
    operations.trigger_dag("pipeline")
    executor = _Recording()
    scheduler = Scheduler(executor, run_dag_processor=False)
    with scheduler:
        for _ in range(20):  # a few passes: create nothing, start the run, queue its root
            if executor.sent:
                break
            scheduler.run_once()
        (first,) = executor.sent
        # The database went down and came back over a minute ago: the message of the try
        # it had queued may be lost (its pass's COMMIT was in doubt).
        scheduler._db_outage.back_at = time.monotonic() - RESEND_AFTER_OUTAGE - 1
        scheduler._last_sweep = 0.0
        scheduler.run_once()
        scheduler._last_sweep = 0.0
        scheduler.run_once()  # once per outage, not per pass
    assert [w.to_dict() for w in executor.sent] == [first.to_dict(), first.to_dict()]
    assert ti_states("pipeline")["extract"] == ("queued", 1)  # the same try: no retry spent
