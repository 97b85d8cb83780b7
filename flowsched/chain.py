"""Many dependencies at once: Airflow's ``chain``, ``chain_linear``, ``cross_downstream``."""

from __future__ import annotations

from collections.abc import Sequence
from itertools import pairwise
from typing import Any

from flowsched.edgemodifier import Label
from flowsched.exceptions import DagDefinitionError


def _is_list(value: Any) -> bool:
    return isinstance(value, Sequence | set) and not isinstance(value, str)


def chain(*elements: Any) -> None:
    """``chain(a, [b, c], [d, e], f)``: a >> b, a >> c, b >> d, c >> e, d >> f, e >> f.

    Two neighbouring lists are linked pairwise, so they must be the same length.
    """
    for up, down in pairwise(elements):
        if _is_list(up) and _is_list(down):
            if len(up) != len(down):
                raise DagDefinitionError(
                    f"chain: lists next to each other must be the same length to be linked "
                    f"pairwise, got {len(up)} and {len(down)}"
                )
            for left, right in zip(up, down, strict=True):
                left >> right
        elif _is_list(up):
            for left in up:
                left >> down
        else:
            up >> down


def chain_linear(*elements: Any) -> None:
    """``chain_linear(a, [b, c], [d, e])``: every task of one element >> every task of the next."""
    if len(elements) < 2:
        raise DagDefinitionError(
            "chain_linear: no dependencies were set. Did you forget to expand with `*`?"
        )
    for up, down in pairwise(elements):
        for left in up if _is_list(up) else [up]:
            left >> (list(down) if _is_list(down) else down)


def cross_downstream(from_tasks: Sequence[Any], to_tasks: Any) -> None:
    """Every task of ``from_tasks`` >> every task of ``to_tasks``."""
    targets = list(to_tasks) if _is_list(to_tasks) else to_tasks
    for task in from_tasks:
        task >> targets


__all__ = ["Label", "chain", "chain_linear", "cross_downstream"]
