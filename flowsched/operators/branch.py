"""BaseBranchOperator: subclasses choose which downstream tasks run (Airflow's names)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from flowsched.operators.base import BaseOperator
from flowsched.operators.skip import SkipMixin


class BranchMixIn(SkipMixin):
    def do_branch(self, context: dict[str, Any], branches: str | Iterable[str] | None) -> Any:
        """Skip every direct downstream task not in ``branches``; returns them for XCom."""
        if isinstance(branches, Iterable) and not isinstance(branches, str):
            branches = list(branches)  # a set or generator is not JSON: XCom gets a list
        self.skip_all_except(context["ti"], branches)
        return branches


class BaseBranchOperator(BaseOperator, BranchMixIn):
    """Implement :meth:`choose_branch`: return a task id, a list of them, or None."""

    def choose_branch(self, context: dict[str, Any]) -> str | Iterable[str] | None:
        raise NotImplementedError(f"{type(self).__name__} must implement choose_branch()")

    def execute(self, context: dict[str, Any]) -> Any:
        return self.do_branch(context, self.choose_branch(context))
