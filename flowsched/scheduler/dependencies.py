"""Trigger rules: given the states of a task's upstreams, what happens to it now.

Each rule is two questions, as in Airflow's TriggerRuleDep: is the task already
doomed (skipped or upstream_failed, decided even before every upstream is done),
and if not, are its upstreams far enough along for it to run?
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from enum import Enum

from flowsched.state import TaskState, TriggerRule


class Decision(Enum):
    READY = "ready"
    WAIT = "wait"
    UPSTREAM_FAILED = "upstream_failed"
    SKIP = "skip"


@dataclass(frozen=True)
class Counts:
    total: int
    success: int
    failed: int  # failed or upstream_failed
    skipped: int

    @property
    def done(self) -> bool:
        return self.success + self.failed + self.skipped == self.total


_UF, _SKIP = Decision.UPSTREAM_FAILED, Decision.SKIP
Doomed = Callable[[Counts], Decision | None]
Met = Callable[[Counts], bool]

RULES: dict[TriggerRule, tuple[Doomed, Met]] = {
    TriggerRule.ALL_SUCCESS: (
        lambda c: _UF if c.failed else _SKIP if c.skipped else None,
        lambda c: c.success == c.total,
    ),
    TriggerRule.ALL_FAILED: (
        lambda c: _SKIP if c.success or c.skipped else None,
        lambda c: c.failed == c.total,
    ),
    TriggerRule.ALL_DONE: (lambda c: None, lambda c: c.done),
    TriggerRule.ONE_SUCCESS: (
        lambda c: (_SKIP if c.skipped == c.total else _UF) if c.done and not c.success else None,
        lambda c: c.success > 0,
    ),
    TriggerRule.ONE_FAILED: (
        lambda c: _SKIP if c.done and not c.failed else None,
        lambda c: c.failed > 0,
    ),
    TriggerRule.ONE_DONE: (
        lambda c: _SKIP if c.done and not (c.success or c.failed) else None,
        lambda c: c.success + c.failed > 0,
    ),
    TriggerRule.NONE_FAILED: (lambda c: _UF if c.failed else None, lambda c: c.done),
    TriggerRule.NONE_FAILED_MIN_ONE_SUCCESS: (
        lambda c: _UF if c.failed else _SKIP if c.skipped == c.total else None,
        lambda c: c.done,
    ),
    TriggerRule.NONE_SKIPPED: (lambda c: _SKIP if c.skipped else None, lambda c: c.done),
    TriggerRule.ALL_SKIPPED: (
        lambda c: _SKIP if c.success or c.failed else None,
        lambda c: c.skipped == c.total,
    ),
    TriggerRule.ALWAYS: (lambda c: None, lambda c: True),
}


def evaluate(rule: TriggerRule, upstream_states: Iterable[str]) -> Decision:
    states = [TaskState(state) for state in upstream_states]
    if not states:
        return Decision.READY
    counts = Counts(
        total=len(states),
        success=states.count(TaskState.SUCCESS),
        failed=states.count(TaskState.FAILED) + states.count(TaskState.UPSTREAM_FAILED),
        skipped=states.count(TaskState.SKIPPED),
    )
    doomed, met = RULES[rule]
    return doomed(counts) or (Decision.READY if met(counts) else Decision.WAIT)
