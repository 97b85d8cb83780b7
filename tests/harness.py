"""Driving a real scheduler with a real local executor from a test."""

from __future__ import annotations

import time
from collections.abc import Callable

from sqlalchemy import select

from flowsched.dag_processor import process_folder
from flowsched.db.engine import session_scope
from flowsched.db.models import DagRun, TaskInstance, TaskTry
from flowsched.executors.local import LocalExecutor
from flowsched.scheduler.loop import Scheduler


def drive(until: Callable[[], bool], timeout: float = 60.0, parallelism: int = 4) -> Scheduler:
    """Run scheduler passes until ``until()`` holds; fail the test on timeout."""
    scheduler = Scheduler(LocalExecutor(parallelism), run_dag_processor=False)
    deadline = time.monotonic() + timeout
    with scheduler:
        while not until():
            if time.monotonic() > deadline:
                raise AssertionError(f"scheduler did not reach {until} within {timeout}s")
            if not scheduler.run_once():
                scheduler.executor.wakeup.wait(0.2)
                scheduler.executor.wakeup.clear()
    return scheduler


def parse() -> None:
    report = process_folder()
    assert not report.errors, report.errors


def run_state(dag_id: str, run_id: str | None = None) -> str | None:
    with session_scope() as session:
        query = select(DagRun.state).where(DagRun.dag_id == dag_id)
        if run_id:
            query = query.where(DagRun.run_id == run_id)
        return session.scalar(query.order_by(DagRun.id.desc()).limit(1))


def run_finished(dag_id: str, run_id: str | None = None) -> Callable[[], bool]:
    def check() -> bool:
        return run_state(dag_id, run_id) in ("success", "failed")

    check.__name__ = f"run of {dag_id} finished"
    return check


def ti_states(dag_id: str, run_id: str | None = None) -> dict[str, tuple[str, int]]:
    with session_scope() as session:
        query = select(TaskInstance).where(TaskInstance.dag_id == dag_id)
        if run_id:
            query = query.where(TaskInstance.run_id == run_id)
        return {ti.task_id: (ti.state, ti.try_number) for ti in session.scalars(query)}


def tries(dag_id: str, task_id: str) -> list[TaskTry]:
    with session_scope() as session:
        rows = session.scalars(
            select(TaskTry)
            .where(TaskTry.dag_id == dag_id, TaskTry.task_id == task_id)
            .order_by(TaskTry.try_number)
        ).all()
        for row in rows:
            session.expunge(row)
        return list(rows)


def wait_for(predicate: Callable[[], bool], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"not reached within {timeout}s: {predicate}")
        time.sleep(0.1)
