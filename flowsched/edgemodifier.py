"""Label: ``a >> Label("when ok") >> b`` names the edge between a and b in the graph view."""

from __future__ import annotations

from typing import Any

from flowsched.operators.base import BaseOperator, _flatten


class Label:
    """An edge modifier: links what comes before it to what comes after, with a label."""

    def __init__(self, label: str) -> None:
        self.label = label
        self._upstream: list[BaseOperator] = []
        self._downstream: list[BaseOperator] = []

    def _link(self, upstream: list[BaseOperator], downstream: list[BaseOperator]) -> None:
        for up in upstream:
            for down in downstream:
                up.set_downstream(down)
                assert up.dag is not None
                up.dag.set_edge_info(up.task_id, down.task_id, {"label": self.label})

    def add_upstream(self, other: Any) -> None:
        operators = _flatten(other, downstream=False)
        self._upstream.extend(operators)
        self._link(operators, self._downstream)

    def add_downstream(self, other: Any) -> None:
        operators = _flatten(other, downstream=True)
        self._downstream.extend(operators)
        self._link(self._upstream, operators)

    def __rshift__(self, other: Any) -> Any:
        self.add_downstream(other)
        return other

    def __lshift__(self, other: Any) -> Any:
        self.add_upstream(other)
        return other

    def __rrshift__(self, other: Any) -> Label:
        self.add_upstream(other)
        return self

    def __rlshift__(self, other: Any) -> Label:
        self.add_downstream(other)
        return self

    def __repr__(self) -> str:
        return f"Label({self.label!r})"
