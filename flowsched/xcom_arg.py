"""XComArg: a reference to another task's return value, resolved when the task runs."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from flowsched.operators.base import DependencyMixin

if TYPE_CHECKING:
    from flowsched.operators.base import BaseOperator


class XComArg(DependencyMixin):
    def __init__(self, operator: BaseOperator, key: str = "return_value") -> None:
        self.operator = operator
        self.key = key

    def _operators(self) -> list[BaseOperator]:
        return [self.operator]

    def __getitem__(self, item: Any) -> XComItem:
        return XComItem(self, item)

    def resolve(self, context: dict[str, Any]) -> Any:
        return context["ti"].xcom_pull(task_ids=self.operator.task_id, key=self.key)

    def __repr__(self) -> str:
        return f"XComArg({self.operator.task_id!r}, key={self.key!r})"

    def __str__(self) -> str:
        """In an f-string or a templated field, the value is pulled when the task renders.

        As in Airflow, this does not add a dependency: set ``upstream >> task`` too.
        """
        return (
            f"{{{{ task_instance.xcom_pull(task_ids={self.operator.task_id!r}, "
            f"key={self.key!r}) }}}}"
        )


class XComItem:
    """``extract()["rows"]``: one item of another task's return value."""

    def __init__(self, parent: XComArg, item: Any) -> None:
        self.parent = parent
        self.item = item
        self.operator = parent.operator

    def resolve(self, context: dict[str, Any]) -> Any:
        return self.parent.resolve(context)[self.item]

    def __str__(self) -> str:
        return f"{str(self.parent)[:-3]}[{self.item!r}] }}}}"


class DagParam:
    """A @dag function's argument: ``params[name]`` of the run, resolved when a task runs."""

    def __init__(self, name: str, default: Any) -> None:
        self.name = name
        self.default = default

    def resolve(self, context: dict[str, Any]) -> Any:
        return context["params"].get(self.name, self.default)

    def __str__(self) -> str:
        return f"{{{{ params[{self.name!r}] }}}}"


# What a task resolves from its run's data just before it executes.
RESOLVABLE = (XComArg, XComItem, DagParam)


def find_xcom_args(value: Any) -> list[XComArg | XComItem]:
    if isinstance(value, XComArg | XComItem):
        return [value]
    if isinstance(value, list | tuple | set):
        return [ref for item in value for ref in find_xcom_args(item)]
    if isinstance(value, dict):
        return [ref for item in value.values() for ref in find_xcom_args(item)]
    return []


def resolve_xcom_args(value: Any, context: dict[str, Any]) -> Any:
    if isinstance(value, RESOLVABLE):
        return value.resolve(context)
    if isinstance(value, list):
        return [resolve_xcom_args(item, context) for item in value]
    if isinstance(value, tuple):
        return tuple(resolve_xcom_args(item, context) for item in value)
    if isinstance(value, dict):
        return {key: resolve_xcom_args(item, context) for key, item in value.items()}
    return value
