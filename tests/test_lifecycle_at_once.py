"""A try's claim and result in one round trip each, on a real MariaDB.

In a try's process (its connections opened with MULTI_STATEMENTS) a transition
that ends its transaction sends the instance's UPDATE, the history row's UPDATE
(guarded by ``ROW_COUNT() > 0``) and the COMMIT at once (``engine.send_at_once``).
These tests hold that path to lifecycle's invariant (a duplicate or stale message
wins nothing, a lost race writes nothing), check that a dead connection is not
reused, and that the connection a process opens for its next try is the child's
alone once handed over.
"""

from __future__ import annotations

import logging
import os
import select
from dataclasses import replace

import pytest
from sqlalchemy import event, text, update

from flowsched import lifecycle
from flowsched.db import engine as db_engine
from flowsched.db.engine import (
    db_outage,
    get_engine,
    handing_over,
    open_connection_for_next_try,
    session_scope,
    with_db_retry,
)
from flowsched.db.models import TaskInstance
from flowsched.state import TaskState
from tests.test_lifecycle import make_run, queue, row, try_rows

pytestmark = pytest.mark.usefixtures("try_process")


@pytest.fixture
def try_process(mysql_home, monkeypatch):
    """This process as a try's: its connections may send statements at once."""
    db_engine.reset_engine()
    monkeypatch.setattr(db_engine, "_try_process", True)
    yield
    db_engine.reset_engine()


@pytest.fixture
def sent():
    """What reaches the server, as the round-trip probe counts it: each statement
    (the first word of a send), and each COMMIT or ROLLBACK actually sent."""
    seen: list[str] = []
    engine = get_engine()

    def statement(_conn, _cursor, sql, *_):
        seen.append(sql.split(None, 1)[0].upper())

    def ended(kind):
        return lambda conn: db_engine.commit_sent(conn) or seen.append(kind)

    commit, rollback = ended("COMMIT"), ended("ROLLBACK")
    event.listen(engine, "before_cursor_execute", statement)
    event.listen(engine, "commit", commit)
    event.listen(engine, "rollback", rollback)
    yield seen
    event.remove(engine, "before_cursor_execute", statement)
    event.remove(engine, "commit", commit)
    event.remove(engine, "rollback", rollback)


def claim(workload, pid=1234):
    with session_scope() as session:
        return lifecycle.claim_try(
            session, workload, hostname="h", nodename="n@h", pid=pid, commit=True
        )


def finish(ti_id, try_number, started, rendered=None):
    with session_scope() as session:
        return lifecycle.finish_try(
            session,
            ti_id,
            try_number,
            success=True,
            started=started,
            outlets=False,
            rendered_fields=rendered,
            commit=True,
        )


def test_a_claim_and_a_result_are_one_send_each(sent):
    ti_id = make_run(["t"])["t"]
    workload = queue(ti_id)
    del sent[:]
    started = claim(workload, pid=4321)
    assert started is not None
    assert sent == ["UPDATE"]  # both UPDATEs and the COMMIT: one send, nothing after
    ti = row(ti_id)
    assert (ti.state, ti.pid, ti.hostname, ti.worker_nodename) == ("running", 4321, "h", "n@h")
    (record,) = try_rows(ti_id)
    assert (record.state, record.pid, record.start_date) == ("running", 4321, started)
    del sent[:]
    # A value with a quote, a backslash, a percent sign and a semicolon: bound, not formatted.
    rendered = {"cmd": "echo 'a\\b'; DROP TABLE task_try; -- 100%"}
    assert finish(ti_id, 1, started, rendered) == TaskState.SUCCESS
    assert sent == ["UPDATE"]
    (record,) = try_rows(ti_id)
    assert (row(ti_id).state, record.state, record.rendered_fields) == (
        "success",
        "success",
        rendered,
    )


def test_each_send_carries_its_own_values_though_compiled_once():
    ids = make_run(["a", "b", "c"])
    with session_scope() as session:
        lifecycle.warm_up(session)  # compiles the forms sent at once
    for pid, task_id in enumerate(ids, start=100):
        workload = queue(ids[task_id])
        with session_scope() as session:
            assert lifecycle.claim_try(
                session, workload, hostname=task_id, nodename=f"n-{task_id}", pid=pid, commit=True
            )
    for pid, (task_id, ti_id) in enumerate(ids.items(), start=100):
        ti, (record,) = row(ti_id), try_rows(ti_id)
        assert (ti.pid, ti.hostname, record.pid, record.worker_nodename) == (
            pid,
            task_id,
            pid,
            f"n-{task_id}",
        )


def test_a_duplicate_claim_in_one_send_wins_nothing_and_writes_no_history():
    ti_id = make_run(["t"])["t"]
    workload = queue(ti_id)
    started = claim(workload, pid=1111)
    assert started is not None
    assert claim(workload, pid=9999) is None  # delivered twice
    (record,) = try_rows(ti_id)
    assert (row(ti_id).pid, record.pid, record.start_date) == (1111, 1111, started)


def test_a_mismatched_message_in_one_send_leaves_the_queued_history_row_alone():
    # The history row (same instance, same try) is queued, as the instance's UPDATE
    # expects: only the guard on that UPDATE's row count keeps it from being claimed.
    ti_id = make_run(["t"])["t"]
    workload = queue(ti_id)
    for other in (replace(workload, task_id="other"), replace(workload, try_number=2)):
        assert claim(other) is None
    (record,) = try_rows(ti_id)
    assert row(ti_id).state == record.state == "queued"
    assert (record.pid, record.start_date) == (None, None)
    assert claim(workload) is not None


def test_a_result_in_one_send_after_the_try_was_taken_away_writes_nothing():
    ti_id = make_run(["t"])["t"]
    workload = queue(ti_id)
    started = claim(workload)
    with session_scope() as session:  # marked failed by hand meanwhile (as mark_try does)
        session.execute(update(TaskInstance).where(TaskInstance.id == ti_id).values(state="failed"))
    assert finish(ti_id, 1, started, {"x": 1}) is None
    (record,) = try_rows(ti_id)
    assert (row(ti_id).state, record.state) == ("failed", "running")
    assert (record.rendered_fields, record.end_date) == (None, None)


def test_what_follows_a_send_in_its_session_is_committed(sent):
    ids = make_run(["a", "b"])
    first, second = queue(ids["a"]), queue(ids["b"])
    del sent[:]
    with session_scope() as session:
        assert lifecycle.claim_try(session, first, hostname="h", nodename="n", pid=1, commit=True)
        # Not what a caller of commit=True does, but it must not be lost if one did.
        assert lifecycle.claim_try(session, second, hostname="h", nodename="n", pid=2)
    assert sent == ["UPDATE", "UPDATE", "UPDATE", "COMMIT"]
    assert (row(ids["a"]).state, row(ids["b"]).state) == ("running", "running")
    assert [r.state for r in try_rows(ids["b"])] == ["running"]


def test_a_send_on_a_dead_connection_is_retried_on_a_new_one(mariadb_server):
    ti_id = make_run(["t"])["t"]
    workload = queue(ti_id)
    with session_scope() as session:
        dead = session.scalar(text("SELECT CONNECTION_ID()"))
    admin = mariadb_server.admin()
    try:
        admin.cursor().execute(f"KILL CONNECTION {int(dead)}")
    finally:
        admin.close()
    ids = []

    def attempt():
        with session_scope() as session:
            ids.append(session.connection().connection.dbapi_connection.thread_id())
            return lifecycle.claim_try(
                session, workload, hostname="h", nodename="n", pid=5, commit=True
            )

    started = with_db_retry(attempt, db_outage(logging.getLogger("test")))
    assert started is not None
    assert ids[0] == dead and ids[-1] != dead and len(ids) == 2
    assert row(ti_id).state == "running"


def _read_within(fd: int, seconds: float) -> bytes:
    ready, _, _ = select.select([fd], [], [], seconds)
    assert ready, f"nothing to read within {seconds} s"
    return os.read(fd, 100)


def test_the_connection_handed_to_a_try_is_the_childs_alone(monkeypatch):
    ti_id = make_run(["t"])["t"]
    workload = queue(ti_id)
    monkeypatch.setattr(db_engine, "_try_process", False)  # the forking process
    db_engine.reset_engine()
    get_engine()  # as the warm-up makes it before the first fork
    open_connection_for_next_try()
    spare = db_engine._spare
    assert spare is not None
    cursor = spare.dbapi_connection.cursor()
    cursor.execute("SELECT CONNECTION_ID()")
    (handed,) = cursor.fetchone()
    cursor.close()
    results_r, results_w = os.pipe()
    go_r, go_w = os.pipe()
    with handing_over():
        pid = os.fork()
    if pid == 0:  # the try
        code, said = 1, "0 False"
        try:
            _read_within(go_r, 30)  # once the parent has dropped its copy
            db_engine.for_a_try_process()
            with session_scope() as session:
                mine = session.scalar(text("SELECT CONNECTION_ID()"))
            started = claim(workload, pid=os.getpid())
            code, said = 0, f"{mine} {started is not None}"
        finally:
            os.write(results_w, said.encode())
            os._exit(code)
    try:
        assert db_engine._spare is None
        # This process's sessions go on, on a connection of their own.
        with session_scope() as session:
            assert session.scalar(text("SELECT CONNECTION_ID()")) != handed
        os.write(go_w, b"x")
        mine, claimed = _read_within(results_r, 60).decode().split()
    finally:
        _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    # The child used the very connection opened for it, after the parent closed its copy:
    # so the parent sent no COM_QUIT on it.
    assert (int(mine), claimed) == (handed, "True")
    assert row(ti_id).state == "running"


def test_a_fork_that_is_not_a_trys_leaves_the_connection_to_this_process(monkeypatch):
    # A DAG file or a plugin forking in a pool process: its child must not take the
    # connection opened for the next try, which stays this process's.
    monkeypatch.setattr(db_engine, "_try_process", False)
    db_engine.reset_engine()
    get_engine()
    open_connection_for_next_try()
    spare = db_engine._spare
    assert spare is not None
    pid = os.fork()
    if pid == 0:
        os._exit(0 if db_engine._spare is None and get_engine().pool is not spare.pool else 1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert db_engine._spare is spare
    cursor = spare.dbapi_connection.cursor()
    cursor.execute("SELECT 1")  # still open: the child closed nothing of it
    assert cursor.fetchone() == (1,)
    cursor.close()
