"""Trigger rules: given the states of a task's upstreams, what happens to it now."""

from __future__ import annotations

from collections.abc import Iterable
from enum import Enum

from flowsched.state import FINISHED_TASK_STATES, TaskState, TriggerRule


class Decision(Enum):
    READY = "ready"
    WAIT = "wait"
    UPSTREAM_FAILED = "upstream_failed"
    SKIP = "skip"


_FAILED = {TaskState.FAILED, TaskState.UPSTREAM_FAILED}


def evaluate(rule: TriggerRule, upstream_states: Iterable[str]) -> Decision:
    states = [TaskState(state) for state in upstream_states]
    if not states:
        return Decision.READY
    done = all(state in FINISHED_TASK_STATES for state in states)
    successes = sum(state is TaskState.SUCCESS for state in states)
    failures = sum(state in _FAILED for state in states)
    skips = sum(state is TaskState.SKIPPED for state in states)

    if rule is TriggerRule.ALL_SUCCESS:
        if failures:
            return Decision.UPSTREAM_FAILED
        if skips:
            return Decision.SKIP
        return Decision.READY if successes == len(states) else Decision.WAIT
    if rule is TriggerRule.ALL_FAILED:
        if successes or skips:
            return Decision.SKIP
        return Decision.READY if failures == len(states) else Decision.WAIT
    if rule is TriggerRule.ALL_DONE:
        return Decision.READY if done else Decision.WAIT
    if rule is TriggerRule.ONE_SUCCESS:
        if successes:
            return Decision.READY
        if done:
            return Decision.UPSTREAM_FAILED if failures else Decision.SKIP
        return Decision.WAIT
    if rule is TriggerRule.ONE_FAILED:
        if failures:
            return Decision.READY
        return Decision.SKIP if done else Decision.WAIT
    if rule is TriggerRule.NONE_FAILED:
        if failures:
            return Decision.UPSTREAM_FAILED
        return Decision.READY if done else Decision.WAIT
    if rule is TriggerRule.NONE_FAILED_MIN_ONE_SUCCESS:
        if failures:
            return Decision.UPSTREAM_FAILED
        if not done:
            return Decision.WAIT
        return Decision.READY if successes else Decision.SKIP
    raise ValueError(f"unknown trigger rule {rule!r}")
