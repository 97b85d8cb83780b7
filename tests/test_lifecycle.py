"""Every transition of a try, and the races each guard settles, on SQLite.

No scheduler, executor or worker: rows are made directly and each function of
`flowsched.lifecycle` is called the way its callers do, one session per actor,
so the "loser matches no row" promise is checked transition by transition.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import select

from flowsched import lifecycle
from flowsched.db.engine import session_scope
from flowsched.db.models import DagRun, TaskInstance, TaskTry
from flowsched.state import TaskState
from flowsched.timezone import utcnow


@pytest.fixture
def ti_id(sqlite_home) -> int:
    """One run of one DAG with one task instance, retries=1, nothing queued yet."""
    return make_run(["t"])["t"]


def make_run(task_ids: list[str], run_id: str = "r1", max_tries: int = 1) -> dict[str, int]:
    now = utcnow()
    with session_scope() as session:
        run = DagRun(
            dag_id="d",
            run_id=run_id,
            run_type="manual",
            state="running",
            logical_date=now,
            created_at=now,
        )
        session.add(run)
        session.flush()
        instances = {
            task_id: TaskInstance(
                dag_run_id=run.id,
                dag_id="d",
                run_id=run_id,
                task_id=task_id,
                state=TaskState.NONE.value,
                try_number=0,
                max_tries=max_tries,
            )
            for task_id in task_ids
        }
        session.add_all(instances.values())
        session.flush()
        return {task_id: ti.id for task_id, ti in instances.items()}


def queue(ti_id: int, seen: TaskInstance | None = None) -> lifecycle.Workload | None:
    """Queue as a scheduler does, from the row as it read it (``seen``: an older read)."""
    with session_scope() as session:
        return lifecycle.queue_try(
            session,
            seen or session.get(TaskInstance, ti_id),
            fingerprint="f" * 64,
            dag_version_id=None,
            fileloc="d.py",
            queue="default",
            job_id=None,
            now=utcnow(),
        )


def claim(workload: lifecycle.Workload, pid: int = 1234) -> bool:
    with session_scope() as session:
        return lifecycle.claim_try(session, workload, hostname="h", nodename="n@h", pid=pid)


def finish(ti_id: int, try_number: int, **kwargs) -> TaskState | None:
    with session_scope() as session:
        return lifecycle.finish_try(session, ti_id, try_number, **kwargs)


def row(ti_id: int) -> TaskInstance:
    with session_scope() as session:
        ti = session.get(TaskInstance, ti_id)
        session.expunge(ti)
        return ti


def try_rows(ti_id: int) -> list[TaskTry]:
    with session_scope() as session:
        rows = session.scalars(
            select(TaskTry).where(TaskTry.task_instance_id == ti_id).order_by(TaskTry.try_number)
        ).all()
        for r in rows:
            session.expunge(r)
        return list(rows)


def running(ti_id: int) -> lifecycle.Workload:
    workload = queue(ti_id)
    assert workload is not None and claim(workload)
    return workload


# --- queue ---------------------------------------------------------------------------


def test_queue_takes_the_next_try_number_and_opens_a_try_record(ti_id):
    workload = queue(ti_id)
    assert workload is not None
    assert (workload.ti_id, workload.try_number, workload.queue) == (ti_id, 1, "default")
    ti = row(ti_id)
    assert (ti.state, ti.try_number, ti.queued_at is not None) == ("queued", 1, True)
    (record,) = try_rows(ti_id)
    assert (record.try_number, record.state) == (1, "queued")


def test_two_schedulers_queueing_the_same_instance_only_one_wins(ti_id):
    # Both read the instance before either writes: the second one's view is stale.
    seen_by_first, seen_by_second = row(ti_id), row(ti_id)
    won = queue(ti_id, seen_by_first)
    lost = queue(ti_id, seen_by_second)
    assert won is not None and lost is None
    assert row(ti_id).try_number == 1
    assert len(try_rows(ti_id)) == 1


@pytest.mark.parametrize("state", ["queued", "running", "success", "failed", "skipped"])
def test_only_waiting_instances_are_queued(ti_id, state):
    with session_scope() as session:
        session.get(TaskInstance, ti_id).state = state
    assert queue(ti_id) is None
    assert row(ti_id).try_number == 0


# --- claim ---------------------------------------------------------------------------


def test_claim_moves_exactly_this_try_to_running(ti_id):
    workload = queue(ti_id)
    assert claim(workload, pid=4321)
    ti = row(ti_id)
    assert (ti.state, ti.pid, ti.hostname, ti.worker_nodename) == ("running", 4321, "h", "n@h")
    assert ti.start_date is not None and ti.last_heartbeat is not None
    assert try_rows(ti_id)[0].state == "running"


def test_a_duplicated_message_claims_nothing(ti_id):
    workload = queue(ti_id)
    assert claim(workload)
    assert not claim(workload, pid=9999)  # Celery delivered it twice
    assert row(ti_id).pid == 1234


def test_a_stale_message_for_an_earlier_try_claims_nothing(ti_id):
    first = running(ti_id)
    assert finish(ti_id, 1, success=False) == TaskState.UP_FOR_RETRY
    with session_scope() as session:
        session.get(TaskInstance, ti_id).state = TaskState.SCHEDULED.value
    second = queue(ti_id)
    assert second.try_number == 2
    assert not claim(first)  # try 1's message arrives late
    assert claim(second)


# --- heartbeat -----------------------------------------------------------------------


def test_heartbeat_only_while_this_try_runs(ti_id):
    running(ti_id)
    with session_scope() as session:
        assert lifecycle.heartbeat_try(session, ti_id, 1)
        assert not lifecycle.heartbeat_try(session, ti_id, 2)
    assert finish(ti_id, 1, success=True) == TaskState.SUCCESS
    with session_scope() as session:
        assert not lifecycle.heartbeat_try(session, ti_id, 1)


# --- finish --------------------------------------------------------------------------


def test_success_closes_the_instance_and_its_try_record(ti_id):
    running(ti_id)
    assert finish(ti_id, 1, success=True, rendered_fields={"x": "1"}) == TaskState.SUCCESS
    ti = row(ti_id)
    assert (ti.state, ti.pid) == ("success", None)
    assert ti.end_date is not None and ti.duration is not None and ti.duration >= 0
    (record,) = try_rows(ti_id)
    assert (record.state, record.rendered_fields, record.error) == ("success", {"x": "1"}, None)


def test_failure_with_retries_left_waits_the_retry_delay(ti_id):
    running(ti_id)
    before = utcnow()
    state = finish(ti_id, 1, success=False, error="boom", retry_delay=timedelta(minutes=5))
    assert state == TaskState.UP_FOR_RETRY
    ti = row(ti_id)
    assert ti.state == "up_for_retry"
    assert ti.next_retry_at >= before + timedelta(minutes=5)
    (record,) = try_rows(ti_id)
    assert (record.state, record.error) == ("failed", "boom")


def test_failure_of_the_last_try_is_final(sqlite_home):
    ti_id = make_run(["t"], max_tries=0)["t"]
    running(ti_id)
    assert finish(ti_id, 1, success=False, error="boom") == TaskState.FAILED
    assert row(ti_id).state == "failed"


def test_an_interrupted_try_is_retried_without_spending_a_retry(sqlite_home):
    ti_id = make_run(["t"], max_tries=0)["t"]
    running(ti_id)
    assert finish(ti_id, 1, success=False, interrupted=True) == TaskState.UP_FOR_RETRY
    ti = row(ti_id)
    assert (ti.state, ti.max_tries) == ("up_for_retry", 1)
    assert ti.next_retry_at <= utcnow()


def test_a_late_result_of_an_earlier_try_changes_nothing(ti_id):
    running(ti_id)
    assert finish(ti_id, 1, success=False) == TaskState.UP_FOR_RETRY
    with session_scope() as session:
        session.get(TaskInstance, ti_id).state = TaskState.SCHEDULED.value
    running(ti_id)  # try 2 runs
    assert finish(ti_id, 1, success=True) is None  # try 1 reports again (a zombie's echo)
    assert (row(ti_id).state, row(ti_id).try_number) == ("running", 2)


def test_a_result_for_a_try_that_was_cleared_or_marked_is_dropped(ti_id):
    running(ti_id)
    with session_scope() as session:
        session.get(TaskInstance, ti_id).state = TaskState.SUCCESS.value  # marked by a user
    assert finish(ti_id, 1, success=False, error="late") is None
    assert row(ti_id).state == "success"
    assert try_rows(ti_id)[0].error is None


def test_the_scheduler_and_a_worker_finishing_the_same_try_only_one_wins(ti_id):
    running(ti_id)
    results = [
        finish(ti_id, 1, success=True),
        finish(ti_id, 1, success=False, error="zombie", expected_states=(TaskState.RUNNING,)),
    ]
    assert results == [TaskState.SUCCESS, None]
    assert try_rows(ti_id)[0].state == "success"


# --- lost tries ----------------------------------------------------------------------


def requeue(ti_id: int, try_number: int, max_lost: int = 2) -> TaskState | None:
    with session_scope() as session:
        return lifecycle.requeue_lost_try(
            session,
            ti_id,
            try_number,
            reason="worker died",
            expected_states=(TaskState.QUEUED, TaskState.RUNNING),
            max_lost=max_lost,
        )


def test_a_lost_try_is_requeued_without_spending_a_retry(sqlite_home):
    ti_id = make_run(["t"], max_tries=0)["t"]
    running(ti_id)
    assert requeue(ti_id, 1) == TaskState.UP_FOR_RETRY
    ti = row(ti_id)
    assert (ti.state, ti.max_tries, ti.lost_count) == ("up_for_retry", 1, 1)
    (record,) = try_rows(ti_id)
    assert record.state == "failed"
    assert "re-queued without spending a retry (lost 1 of 2 allowed)" in record.error


def test_lost_past_max_lost_tries_is_a_plain_failure(sqlite_home):
    ti_id = make_run(["t"], max_tries=0)["t"]
    running(ti_id)
    with session_scope() as session:
        session.get(TaskInstance, ti_id).lost_count = 2
    assert requeue(ti_id, 1, max_lost=2) == TaskState.FAILED
    assert "counted as a failure" in try_rows(ti_id)[0].error


def test_a_lost_try_that_finished_meanwhile_is_not_requeued(ti_id):
    running(ti_id)
    assert finish(ti_id, 1, success=True) == TaskState.SUCCESS
    assert requeue(ti_id, 1) is None
    assert (row(ti_id).state, row(ti_id).lost_count) == ("success", 0)


def test_two_sweeps_requeueing_the_same_lost_try_count_it_once(ti_id):
    running(ti_id)
    assert [requeue(ti_id, 1), requeue(ti_id, 1)] == [TaskState.UP_FOR_RETRY, None]
    assert row(ti_id).lost_count == 1


# --- skips and run timeouts ------------------------------------------------------------


def test_skip_try_ends_a_running_try_without_a_retry(ti_id):
    running(ti_id)
    with session_scope() as session:
        assert lifecycle.skip_try(session, ti_id, 1, reason="SkipTask") == TaskState.SKIPPED
        assert lifecycle.skip_try(session, ti_id, 1) is None
    assert row(ti_id).state == "skipped"
    assert (try_rows(ti_id)[0].state, try_rows(ti_id)[0].error) == ("skipped", "SkipTask")


def test_skip_tasks_leaves_tasks_already_queued_or_running(sqlite_home):
    ids = make_run(["waiting", "scheduled", "queued", "running"])
    with session_scope() as session:
        session.get(TaskInstance, ids["scheduled"]).state = "scheduled"
    queue(ids["queued"])
    running(ids["running"])
    with session_scope() as session:
        assert lifecycle.skip_tasks(session, "d", "r1", ids) == 2
    assert [row(ids[t]).state for t in ids] == ["skipped", "skipped", "queued", "running"]


def test_a_run_timeout_skips_what_is_unfinished_and_closes_started_tries(sqlite_home):
    ids = make_run(["done", "running", "waiting"])
    running(ids["done"])
    assert finish(ids["done"], 1, success=True) == TaskState.SUCCESS
    running(ids["running"])
    with session_scope() as session:
        run_id = session.get(TaskInstance, ids["done"]).dag_run_id
        assert lifecycle.time_out_run(session, run_id, "dagrun_timeout of 0:01:00") == 2
    assert [row(ids[t]).state for t in ids] == ["success", "skipped", "skipped"]
    record = try_rows(ids["running"])[0]
    assert (record.state, record.error) == ("skipped", "dagrun_timeout of 0:01:00")
    with session_scope() as session:
        # The running try notices at its next heartbeat.
        assert not lifecycle.heartbeat_try(session, ids["running"], 1)
