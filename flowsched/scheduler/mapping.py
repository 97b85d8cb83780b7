"""Expanding mapped tasks in the scheduler, from serialized lengths and stored XComs.

The scheduler never imports user code: a mapped task's length is the product of
its literal lengths (serialized at parse time) and the lengths of the upstream
XCom values it maps over (read from the ``xcom`` table once that upstream is
done). Copies are born and ended through :mod:`flowsched.lifecycle`.

For trigger rules and the run's end, a mapped task's copies count as one
state (:func:`collapse`): unfinished while any copy is, else the worst outcome.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session

from flowsched.db.models import DagRun
from flowsched.lifecycle import end_unexpanded, expand_mapped
from flowsched.mapped_operator import UnmappableValue, check_length
from flowsched.scheduler.dependencies import Decision, evaluate
from flowsched.serialization import SerializedDAG, TaskSpec
from flowsched.state import FINISHED_TASK_STATES, TaskState
from flowsched.xcom import pull_xcom

# A row of the scheduler's light view of a task instance: (id, state, next retry).
Row = tuple[int, str, datetime | None]

_FINISHED = {state.value for state in FINISHED_TASK_STATES}
# The worst outcome first: what the copies of a finished mapped task count as.
_OUTCOME_ORDER = (
    TaskState.FAILED.value,
    TaskState.UPSTREAM_FAILED.value,
    TaskState.SKIPPED.value,
)


def collapse(states: Iterable[str]) -> str:
    """One state for a mapped task's copies, as its downstream trigger rules see it."""
    seen = set(states)
    if seen - _FINISHED:
        return TaskState.RUNNING.value  # some copy is still to run: downstream waits
    for state in _OUTCOME_ORDER:
        if state in seen:
            return state
    return TaskState.SUCCESS.value


def _length_of(session: Session, run: DagRun, spec: TaskSpec, arg: dict[str, Any]) -> int:
    if "length" in arg:
        return int(arg["length"])
    ref = arg["xcom"]
    value = pull_xcom(session, run.dag_id, run.run_id, ref["task_id"], ref["key"])
    if value is None:
        raise UnmappableValue(
            f"task '{spec.task_id}': upstream '{ref['task_id']}' did not push XCom "
            f"{ref['key']!r} for task mapping"
        )
    if "item" in ref:
        try:
            value = value[ref["item"]]
        except (KeyError, IndexError, TypeError):
            raise UnmappableValue(
                f"task '{spec.task_id}': XCom {ref['key']!r} of '{ref['task_id']}' has no "
                f"item {ref['item']!r} to map over"
            ) from None
    if not isinstance(value, list | dict):
        raise UnmappableValue(
            f"task '{spec.task_id}': unmappable return type {type(value).__name__!r} "
            f"from '{ref['task_id']}' (map over a list or a dict)"
        )
    return len(value)


def map_length(session: Session, run: DagRun, spec: TaskSpec) -> int:
    """How many copies ``spec`` expands into in ``run``; UnmappableValue says why none."""
    assert spec.mapped is not None
    lengths = [_length_of(session, run, spec, arg) for arg in spec.mapped["args"]]
    total = math.prod(lengths)
    check_length(spec.task_id, total)
    return total


def expand(session: Session, run: DagRun, spec: TaskSpec, ti_id: int, now: datetime) -> str:
    """Expand a mapped task whose upstreams are done; its (collapsed) new state."""
    try:
        count = map_length(session, run, spec)
    except UnmappableValue as exc:
        end_unexpanded(session, ti_id, TaskState.FAILED, str(exc), now)
        return TaskState.FAILED.value
    if count == 0:
        # Airflow: a zero-length map skips the task (and, by trigger rule, its downstream).
        end_unexpanded(session, ti_id, TaskState.SKIPPED, "mapped over nothing: 0 items", now)
        return TaskState.SKIPPED.value
    expand_mapped(session, ti_id, count, now)
    return TaskState.RUNNING.value


def copy_decisions(
    dag: SerializedDAG, states: dict[str, str], copies: dict[str, list[Row]], now: datetime
) -> list[tuple[int, str, str]]:
    """Per-copy moves of expanded mapped tasks, as (instance id, state it was decided
    from, new state): a copy's retry is due, or a cleared copy (back to ``none``) may run
    again because its task's upstreams still allow it."""
    decided: list[tuple[int, str, str]] = []
    for task_id, rows in copies.items():
        spec = dag.tasks.get(task_id)
        if spec is None:
            continue
        upstream = [states.get(up, TaskState.NONE.value) for up in spec.upstream]
        ready = evaluate(spec.trigger_rule, upstream) is Decision.READY
        for ti_id, state, retry_at in rows:
            due = state == TaskState.UP_FOR_RETRY.value and (retry_at is None or retry_at <= now)
            if due or (state == TaskState.NONE.value and ready):
                decided.append((ti_id, state, TaskState.SCHEDULED.value))
    return decided
