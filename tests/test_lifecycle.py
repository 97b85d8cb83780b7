"""Every transition of a try, and the races each guard settles, on SQLite.

No scheduler, executor or worker: rows are made directly and each function of
`flowsched.lifecycle` is called the way its callers do, one session per actor,
so the "loser matches no row" promise is checked transition by transition.
"""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest
from sqlalchemy import select

from flowsched import DAG, BashOperator, lifecycle
from flowsched.db.engine import session_scope
from flowsched.db.models import DagRun, DagVersion, TaskInstance, TaskTry
from flowsched.state import RunState, TaskState
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


def make_version(number: int = 1, **task_args) -> int:
    """A parsed version of DAG "d" whose task "t" has ``task_args`` (its retry policy)."""
    with DAG("d", schedule=None, start_date=datetime(2026, 1, 1)) as dag:
        BashOperator(task_id="t", bash_command="true", **task_args)
    with session_scope() as session:
        version = DagVersion(
            dag_id="d",
            version_number=number,
            fingerprint=str(number) * 64,
            fileloc="d.py",
            source="",
            serialized=dag.to_dict(),
            created_at=utcnow(),
        )
        session.add(version)
        session.flush()
        return version.id


def queue(
    ti_id: int,
    seen: TaskInstance | None = None,
    *,
    dag_version_id: int | None = None,
    by_hand: bool = False,
) -> lifecycle.Workload | None:
    """Queue as a scheduler does, from the row as it read it (``seen``: an older read)."""
    with session_scope() as session:
        return lifecycle.queue_try(
            session,
            seen or session.get(TaskInstance, ti_id),
            fingerprint="f" * 64,
            dag_version_id=dag_version_id,
            fileloc="d.py",
            queue="default",
            job_id=None,
            now=utcnow(),
            by_hand=by_hand,
        )


def claim(workload: lifecycle.Workload, pid: int = 1234) -> bool:
    with session_scope() as session:
        started = lifecycle.claim_try(session, workload, hostname="h", nodename="n@h", pid=pid)
        return started is not None


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


def running(ti_id: int, dag_version_id: int | None = None) -> lifecycle.Workload:
    workload = queue(ti_id, dag_version_id=dag_version_id)
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


TARGET = lifecycle.QueueTarget("f" * 64, None, "d.py", "default", (("p.py", "e" * 64),))


def queue_many(seen: list[TaskInstance], job_id: int | None = 7) -> list[lifecycle.Workload]:
    """Queue as a scheduler's pass does, from rows as it read them."""
    with session_scope() as session:
        return lifecycle.queue_tries(
            session, [(ti, TARGET) for ti in seen], job_id=job_id, now=utcnow()
        )


def test_queue_tries_queues_many_in_order_each_with_a_try_record(sqlite_home):
    ids = make_run(["a", "b", "c"])
    workloads = queue_many([row(ids[t]) for t in ("c", "a", "b")])
    assert [w.task_id for w in workloads] == ["c", "a", "b"]
    assert {(w.try_number, w.queue, w.fileloc) for w in workloads} == {(1, "default", "d.py")}
    assert workloads[0].plugins == {"p.py": "e" * 64}
    for ti_id in ids.values():
        ti = row(ti_id)
        assert (ti.state, ti.try_number, ti.queued_by_job_id) == ("queued", 1, 7)
        (record,) = try_rows(ti_id)
        assert (record.try_number, record.state, record.fingerprint) == (1, "queued", "f" * 64)


def test_queue_tries_leaves_out_instances_another_writer_moved_first(sqlite_home):
    ids = make_run(["a", "b", "c"])
    seen = [row(ids[t]) for t in ("a", "b", "c")]
    assert queue(ids["b"]) is not None  # another scheduler queued b after this pass read it
    with session_scope() as session:
        session.get(TaskInstance, ids["c"]).state = "skipped"  # c was marked meanwhile
    workloads = queue_many(seen)
    assert [w.task_id for w in workloads] == ["a"]
    assert [r.try_number for r in try_rows(ids["b"])] == [1]  # b's one try, not two
    assert try_rows(ids["c"]) == [] and row(ids["c"]).state == "skipped"
    # A read older than the instance's try number loses too, even once it waits again.
    with session_scope() as session:
        session.get(TaskInstance, ids["b"]).state = "scheduled"
    assert queue_many([seen[1]]) == [] and row(ids["b"]).try_number == 1


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


def refusal(workload: lifecycle.Workload) -> str:
    with session_scope(read_only=True) as session:
        return lifecycle.claim_refusal(session, workload)


def test_a_message_naming_other_ids_claims_nothing_and_says_why(ti_id):
    from dataclasses import replace

    workload = queue(ti_id)
    for other in (
        replace(workload, task_id="other"),
        replace(workload, dag_id="other"),
        replace(workload, run_id="other"),
        replace(workload, map_index=3),
    ):
        assert not claim(other)  # another task's ids on this row: never its code here
        assert refusal(other).startswith(f"message names {other.describe()} but task instance")
    assert row(ti_id).state == "queued"
    assert refusal(replace(workload, ti_id=987654)).startswith("unknown task instance 987654")
    assert claim(workload)
    assert refusal(workload) == (
        f"stale message for {workload.describe()}: the task is now running at try 1 "
        "(duplicate delivery or already retried)"
    )


def test_the_workload_carries_the_run_fields_the_try_needs(ti_id):
    import json

    with session_scope() as session:
        session.get(DagRun, row(ti_id).dag_run_id).conf = {"k": [1, 2]}
    workload = queue(ti_id)
    with session_scope() as session:
        run = session.get(DagRun, row(ti_id).dag_run_id)
        assert workload.run["logical_date"] == run.logical_date.isoformat()
        assert (workload.run["run_type"], workload.run["conf"]) == ("manual", {"k": [1, 2]})
        assert workload.run["id"] == run.id
    # It crosses processes as JSON (Celery), and comes back the same.
    body = json.loads(json.dumps(workload.to_dict()))
    assert lifecycle.Workload.from_dict(body) == workload
    with pytest.raises(ValueError, match="run fields"):
        lifecycle.Workload.from_dict({**body, "run": {"conf": {}}})


def test_a_success_with_its_claim_time_is_recorded_without_a_read(ti_id):
    workload = queue(ti_id)
    with session_scope() as session:
        started = lifecycle.claim_try(session, workload, hostname="h", nodename="n", pid=7)
    assert started is not None
    state = finish(ti_id, 1, success=True, started=started, outlets=False, rendered_fields={})
    assert state == TaskState.SUCCESS
    ti = row(ti_id)
    assert (ti.state, ti.pid, ti.end_date is not None) == ("success", None, True)
    assert ti.duration == pytest.approx((ti.end_date - started).total_seconds())
    (record,) = try_rows(ti_id)
    assert (record.state, record.rendered_fields, record.duration) == ("success", {}, ti.duration)
    # Recorded once: a late second result (or one for a cleared try) matches nothing.
    assert finish(ti_id, 1, success=True, started=started, outlets=False) is None


def test_warming_up_the_statements_changes_nothing(ti_id):
    workload = queue(ti_id)
    before = (row(ti_id).state, [(r.state, r.start_date) for r in try_rows(ti_id)])
    with session_scope() as session:
        lifecycle.warm_up(session)
    assert (row(ti_id).state, [(r.state, r.start_date) for r in try_rows(ti_id)]) == before
    assert claim(workload)  # and the try is still claimable


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
    queued_with = make_version(1, retries=1, retry_delay=timedelta(minutes=5))
    make_version(2, retries=1, retry_delay=timedelta(hours=1))  # the file changed since
    running(ti_id, dag_version_id=queued_with)
    before = utcnow()
    state = finish(ti_id, 1, success=False, error="boom")
    after = utcnow()
    assert state == TaskState.UP_FOR_RETRY
    ti = row(ti_id)
    assert ti.state == "up_for_retry"
    # The policy the try ran under: its own version's, looked up by finish_try itself.
    assert before + timedelta(minutes=5) <= ti.next_retry_at <= after + timedelta(minutes=5)
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


def test_a_lost_try_counted_as_a_failure_waits_the_retry_delay(ti_id):
    # The worker's own recovery and the scheduler's sweeps pass no policy: none is needed.
    version = make_version(retries=1, retry_delay=timedelta(minutes=5))
    running(ti_id, dag_version_id=version)
    with session_scope() as session:
        session.get(TaskInstance, ti_id).lost_count = 2
    assert requeue(ti_id, 1, max_lost=2) == TaskState.UP_FOR_RETRY
    assert row(ti_id).next_retry_at >= utcnow() + timedelta(minutes=4)


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


def test_a_run_timeout_leaves_a_try_that_finished_before_it_alone(sqlite_home):
    ids = make_run(["late", "sensor"])
    running(ids["late"])
    workload = running(ids["sensor"])
    with session_scope() as session:
        lifecycle.reschedule_try(
            session, ids["sensor"], workload.try_number, reschedule_date=utcnow()
        )
    assert finish(ids["late"], 1, success=True) == TaskState.SUCCESS
    with session_scope() as session:
        run_id = session.get(TaskInstance, ids["late"]).dag_run_id
        assert lifecycle.time_out_run(session, run_id, "timed out") == 1
    assert [try_rows(ids[t])[0].state for t in ids] == ["success", "skipped"]
    assert try_rows(ids["sensor"])[0].error == "timed out"


# --- scheduling decisions ------------------------------------------------------------


def decide(*decisions: tuple[int, str, str]) -> int:
    with session_scope() as session:
        return lifecycle.apply_decisions(session, decisions, utcnow())


def set_state(ti_id: int, state: str) -> None:
    """Another writer moved the instance (what the lifecycle guards against)."""
    with session_scope() as session:
        session.get(TaskInstance, ti_id).state = state


def test_decisions_schedule_waiting_tasks_and_end_the_others(sqlite_home):
    ids = make_run(["ready", "doomed", "retry"])
    set_state(ids["retry"], "up_for_retry")
    changed = decide(
        (ids["ready"], "none", "scheduled"),
        (ids["doomed"], "none", "upstream_failed"),
        (ids["retry"], "up_for_retry", "scheduled"),
    )
    assert changed == 3
    ready, doomed, retry = (row(ids[t]) for t in ("ready", "doomed", "retry"))
    assert (ready.state, ready.scheduled_at is not None, ready.end_date) == (
        "scheduled",
        True,
        None,
    )
    assert (doomed.state, doomed.end_date is not None) == ("upstream_failed", True)
    assert retry.state == "scheduled"


def test_a_decision_on_a_stale_read_loses(sqlite_home):
    ids = make_run(["marked", "cleared"])
    set_state(ids["cleared"], "up_for_retry")
    # The scheduler read both; then a user marked one and cleared the other.
    set_state(ids["marked"], "success")
    set_state(ids["cleared"], "none")
    assert (
        decide(
            (ids["marked"], "none", "upstream_failed"),
            (ids["cleared"], "up_for_retry", "scheduled"),
        )
        == 0
    )
    assert [row(ids[t]).state for t in ("marked", "cleared")] == ["success", "none"]


def test_a_task_removed_from_the_dag_while_running_ends_its_try(ti_id):
    running(ti_id)
    assert decide((ti_id, "running", "skipped")) == 1
    assert row(ti_id).state == "skipped"
    assert try_rows(ti_id)[0].state == "skipped"
    assert finish(ti_id, 1, success=True) is None  # its late result changes nothing


def test_fail_unqueueable_fails_a_scheduled_task_and_loses_to_a_scheduler(sqlite_home):
    ids = make_run(["lone", "raced"])
    for ti_id in ids.values():
        set_state(ti_id, "scheduled")
    with session_scope() as session:
        assert lifecycle.fail_unqueueable(
            session, session.get(TaskInstance, ids["lone"]), "no pool", utcnow()
        )
    assert row(ids["lone"]).state == "failed"
    assert try_rows(ids["lone"]) == []  # no try was opened
    seen = row(ids["raced"])
    assert queue(ids["raced"]) is not None  # another scheduler queued it first
    with session_scope() as session:
        assert not lifecycle.fail_unqueueable(session, seen, "no pool", utcnow())
    assert row(ids["raced"]).state == "queued"


def test_fail_unqueueable_ends_a_due_sensors_open_try(ti_id):
    workload = running(ti_id)
    with session_scope() as session:
        lifecycle.reschedule_try(session, ti_id, workload.try_number, reschedule_date=utcnow())
        assert lifecycle.fail_unqueueable(
            session, session.get(TaskInstance, ti_id), "no pool", utcnow()
        )
    (record,) = try_rows(ti_id)
    assert (record.state, record.error) == ("failed", "no pool")


# --- by hand: clear, mark, tasks run -------------------------------------------------


def clear(*seen: TaskInstance, retries: int = 1) -> list[str]:
    with session_scope() as session:
        return lifecycle.clear_tries(session, [(ti, retries) for ti in seen])


def test_clear_resets_an_ended_instance_with_a_fresh_retry_budget(sqlite_home):
    ti_id = make_run(["t"], max_tries=0)["t"]
    running(ti_id)
    assert finish(ti_id, 1, success=False, error="boom") == TaskState.FAILED
    assert clear(row(ti_id), retries=2) == []
    ti = row(ti_id)
    assert (ti.state, ti.try_number, ti.max_tries, ti.end_date) == ("none", 1, 3, None)
    assert [r.state for r in try_rows(ti_id)] == ["failed"]  # history kept
    assert queue(ti_id).try_number == 2


def test_clear_never_resets_a_queued_or_running_try(ti_id):
    running(ti_id)
    assert clear(row(ti_id)) == ["t"]
    assert row(ti_id).state == "running"


def test_a_clear_on_a_stale_read_loses(ti_id):
    running(ti_id)
    assert finish(ti_id, 1, success=True) == TaskState.SUCCESS
    seen = row(ti_id)
    assert clear(seen) == []
    assert queue(ti_id) is not None  # the scheduler queued try 2 meanwhile
    assert clear(seen) == ["t"]
    assert (row(ti_id).state, row(ti_id).try_number) == ("queued", 2)


def mark(seen: TaskInstance, state: TaskState) -> bool:
    with session_scope() as session:
        return lifecycle.mark_try(session, seen, state, utcnow())


def test_marking_a_running_try_ends_it_and_its_result_is_dropped(ti_id):
    running(ti_id)
    assert mark(row(ti_id), TaskState.SUCCESS)
    assert row(ti_id).state == "success"
    (record,) = try_rows(ti_id)
    assert (record.state, record.error) == ("success", "marked success by hand while running")
    with session_scope() as session:
        assert not lifecycle.heartbeat_try(session, ti_id, 1)  # the try stops itself
    assert finish(ti_id, 1, success=False, error="late") is None
    assert try_rows(ti_id)[0].state == "success"


def test_marking_a_finished_instance_leaves_its_history_alone(ti_id):
    running(ti_id)
    assert finish(ti_id, 1, success=True) == TaskState.SUCCESS
    assert mark(row(ti_id), TaskState.FAILED)
    assert row(ti_id).state == "failed"
    assert (try_rows(ti_id)[0].state, try_rows(ti_id)[0].error) == ("success", None)


def test_a_mark_on_a_stale_read_loses(ti_id):
    running(ti_id)
    seen = row(ti_id)
    assert finish(ti_id, 1, success=False, error="boom") == TaskState.UP_FOR_RETRY
    assert not mark(seen, TaskState.SUCCESS)
    assert row(ti_id).state == "up_for_retry"
    assert try_rows(ti_id)[0].state == "failed"


def test_only_success_or_failed_can_be_marked(ti_id):
    with pytest.raises(ValueError, match="only be marked success or failed, not 'skipped'"):
        mark(row(ti_id), TaskState.SKIPPED)


def test_tasks_run_by_hand_starts_a_new_try_from_an_ended_instance(ti_id):
    running(ti_id)
    assert finish(ti_id, 1, success=True) == TaskState.SUCCESS
    workload = queue(ti_id, by_hand=True)
    assert workload is not None and workload.try_number == 2
    assert (row(ti_id).state, [r.state for r in try_rows(ti_id)]) == (
        "queued",
        ["success", "queued"],
    )


def test_tasks_run_by_hand_never_starts_a_try_twice(ti_id):
    running(ti_id)
    assert queue(ti_id, by_hand=True) is None
    seen = row(ti_id)
    assert finish(ti_id, 1, success=True) == TaskState.SUCCESS
    assert queue(ti_id, seen, by_hand=True) is None  # read while running: refused
    stale = row(ti_id)
    assert queue(ti_id, by_hand=True) is not None
    assert queue(ti_id, stale, by_hand=True) is None  # a second `tasks run` raced it
    assert row(ti_id).try_number == 2


def test_a_reschedule_after_the_try_was_marked_is_dropped(ti_id):
    running(ti_id)
    assert mark(row(ti_id), TaskState.FAILED)
    with session_scope() as session:
        assert lifecycle.reschedule_try(session, ti_id, 1, reschedule_date=utcnow()) is None
        assert lifecycle.poke_history(session, ti_id, 1) == (None, 0)
    assert row(ti_id).state == "failed"


# --- runs ----------------------------------------------------------------------------


def test_runs_start_and_reopen(ti_id):
    now = utcnow()
    with session_scope() as session:
        run = session.get(DagRun, session.get(TaskInstance, ti_id).dag_run_id)
        run.state, run.end_date = "queued", None
        lifecycle.start_run(run, now)
        assert (run.state, run.start_date) == ("running", now)
        lifecycle.finish_run(session, run, RunState.FAILED, reason="x", request_callback=False)
        assert (run.state, run.end_date is not None) == ("failed", True)
        lifecycle.reopen_run(run)
        assert (run.state, run.end_date) == ("running", None)
