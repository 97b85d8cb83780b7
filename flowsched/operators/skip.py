"""SkipMixin: how an operator marks tasks downstream of it as skipped (Airflow's names).

The skips are not written while the task runs: they are recorded here and the
runner writes them in the same transaction that records the try's success, so a
try that fails, times out or is retried skips nothing, and its retry may choose
differently.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

from flowsched.exceptions import FlowschedError

log = logging.getLogger("flowsched.task")


class BranchError(FlowschedError):
    """A branch callable returned something that is not a task id of its DAG."""


class SkipMixin:
    task_id: str
    dag: Any
    downstream_task_ids: set[str]

    @property
    def tasks_to_skip(self) -> set[str]:
        """Task ids this try decided to skip; applied when the try succeeds."""
        return self.__dict__.setdefault("_tasks_to_skip", set())

    def skip(
        self,
        dag_run: Any = None,
        execution_date: Any = None,
        tasks: Iterable[Any] = (),
        map_index: int = -1,
    ) -> None:
        """Skip ``tasks`` (operators or task ids) of this run once this try succeeds."""
        for task in tasks:
            self.tasks_to_skip.add(task if isinstance(task, str) else task.task_id)

    def skip_all_except(self, ti: Any, branch_task_ids: str | Iterable[str] | None) -> None:
        """Skip the direct downstream tasks not chosen, as Airflow's branch operators do.

        A task downstream of a chosen one is followed too, so in ``branch >> [a, join]``
        with ``a >> join``, choosing ``a`` runs ``join`` rather than skipping it.
        """
        if branch_task_ids is None:
            chosen: set[str] = set()
        elif isinstance(branch_task_ids, str):
            chosen = {branch_task_ids}
        elif isinstance(branch_task_ids, Iterable):
            chosen = set(branch_task_ids)
            wrong = [item for item in chosen if not isinstance(item, str)]
            if wrong:
                raise BranchError(
                    f"task '{self.task_id}': 'branch_task_ids' must contain only task ids "
                    f"(strings), got {wrong!r}"
                )
        else:
            raise BranchError(
                f"task '{self.task_id}': 'branch_task_ids' must be None, a task id or a list "
                f"of task ids, got {type(branch_task_ids).__name__} {branch_task_ids!r}"
            )
        unknown = sorted(chosen - set(self.dag.tasks))
        if unknown:
            raise BranchError(
                f"task '{self.task_id}': 'branch_task_ids' must contain only valid task_ids "
                f"of DAG '{self.dag.dag_id}'. Invalid tasks found: {unknown}"
            )
        followed = set(chosen)
        for task_id in chosen:
            followed |= self.dag.tasks[task_id].get_flat_relative_ids(upstream=False)
        log.info("Following branch %s", sorted(chosen))
        skipped = sorted(self.downstream_task_ids - followed)
        log.info("Skipping tasks %s", skipped)
        self.skip(tasks=skipped)
