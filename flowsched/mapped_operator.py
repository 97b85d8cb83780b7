"""Dynamic task mapping as authored: ``Op.partial(...).expand(...)`` and ``expand_kwargs``.

A mapped task is one node of the DAG (one task_id, its dependencies, its retry
policy) that the scheduler expands into task instances with ``map_index``
0..n-1 once the lengths of what it maps over are known: a literal list or dict
at parse time, an upstream's XCom when that upstream has finished. Its
serialized form holds only those lengths and XCom references
(:meth:`MappedOperator.mapping_spec`), so the scheduler never imports user code;
the worker rebuilds the real operator for one index (:meth:`MappedOperator.unmap`).

As in Airflow: several ``expand`` arguments map over their cross product (the
last argument varies fastest); mapping over a dict gives ``(key, value)``
tuples; ``expand_kwargs`` takes a list of keyword dicts, one task instance each.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from typing import Any

from flowsched.config import get_config
from flowsched.exceptions import DagDefinitionError
from flowsched.operators.base import TASK_DEFAULTS, BaseOperator
from flowsched.xcom_arg import XComArg, XComItem, find_xcom_args

# Keyword arguments BaseOperator itself takes: they shape the one mapped node and
# cannot be mapped over (Airflow refuses to expand them too).
BASE_ARGUMENTS = frozenset(
    name
    for name in inspect.signature(BaseOperator.__init__).parameters
    if name not in ("self", "unexpected")
)

# What pulls an upstream's XCom: (task_id, key) -> value (a list for a mapped upstream).
Puller = Callable[[str, str], Any]


class UnmappableValue(DagDefinitionError):
    """What a task maps over is not a list or dict, or is longer than max_map_length."""


def _reference(value: XComArg | XComItem) -> dict[str, Any]:
    parent = value.parent if isinstance(value, XComItem) else value
    out: dict[str, Any] = {"task_id": parent.operator.task_id, "key": parent.key}
    if isinstance(value, XComItem):
        out["item"] = value.item
    return out


def _check_mappable(task_id: str, name: str, value: Any) -> None:
    """A literal to map over must be a list or dict within ``[core] max_map_length``."""
    if isinstance(value, XComArg | XComItem):
        return
    if not isinstance(value, list | tuple | dict):
        raise UnmappableValue(
            f"task '{task_id}': expand() got an unexpected type {type(value).__name__!r} "
            f"for keyword argument {name!r}: map over a list, a dict or an XComArg"
        )
    check_length(task_id, len(value))


def check_length(task_id: str, length: int) -> None:
    limit = get_config().core.max_map_length
    if length > limit:
        raise UnmappableValue(
            f"task '{task_id}': unmappable length {length} > {limit} ([core] max_map_length)"
        )


def as_items(value: Any) -> list[Any]:
    """What one value maps over, in order: a dict's items as (key, value) tuples."""
    if isinstance(value, Mapping):
        return list(value.items())
    return list(value)


class OperatorPartial:
    """``BashOperator.partial(task_id=..., ...)``: the arguments every mapped copy shares."""

    def __init__(self, operator_class: type[BaseOperator], kwargs: dict[str, Any]) -> None:
        if "task_id" not in kwargs:
            raise DagDefinitionError(
                f"{operator_class.__name__}.partial() needs task_id (the mapped task's id)"
            )
        self.operator_class = operator_class
        self.kwargs = kwargs

    def expand(self, **mapped: Any) -> MappedOperator:
        return MappedOperator.build(self.operator_class, self.kwargs, mapped=mapped)

    def expand_kwargs(self, kwargs: Any) -> MappedOperator:
        return MappedOperator.build(self.operator_class, self.kwargs, mapped_kwargs=kwargs)


class MappedOperator(BaseOperator):
    """One task of the DAG that runs once per item: ``map_index`` 0..n-1.

    ``into`` names where mapped values go: the operator's keyword arguments, or
    ``op_kwargs`` for a ``@task`` function (its parameters).
    """

    def __init__(
        self,
        task_id: str,
        *,
        operator_class: type[BaseOperator],
        partial_kwargs: dict[str, Any],
        mapped: dict[str, Any] | None,
        mapped_kwargs: Any,
        into: str | None,
        base_kwargs: dict[str, Any],
    ) -> None:
        super().__init__(task_id, **base_kwargs)
        self.operator_class = operator_class
        self.operator_name = operator_class.__name__
        self.partial_kwargs = partial_kwargs
        self.base_kwargs = base_kwargs
        self.mapped = mapped
        self.mapped_kwargs = mapped_kwargs
        self.into = into
        self.template_fields = tuple(getattr(operator_class, "template_fields", ()))
        if self.dag is not None:
            for reference in find_xcom_args((partial_kwargs, mapped, mapped_kwargs)):
                reference.operator.set_downstream(self)

    @classmethod
    def build(
        cls,
        operator_class: type[BaseOperator],
        kwargs: dict[str, Any],
        *,
        mapped: dict[str, Any] | None = None,
        mapped_kwargs: Any = None,
        into: str | None = None,
    ) -> MappedOperator:
        """Check the arguments as Airflow does, then add the mapped task to the DAG."""
        kwargs = dict(kwargs)
        task_id = kwargs.pop("task_id")
        base = {name: kwargs.pop(name) for name in list(kwargs) if name in BASE_ARGUMENTS}
        if mapped is not None:
            if not mapped:
                raise DagDefinitionError(f"task '{task_id}': no arguments to expand against")
            for name, value in mapped.items():
                if into is None and name in BASE_ARGUMENTS:
                    raise DagDefinitionError(
                        f"task '{task_id}': cannot map over {name!r}: it is an argument of "
                        "every task (set it in partial())"
                    )
                given_twice = name in (kwargs.get("op_kwargs") or {}) if into else name in kwargs
                if given_twice:
                    raise DagDefinitionError(
                        f"task '{task_id}': {name!r} given to both partial() and expand()"
                    )
                _check_mappable(task_id, name, value)
        else:
            if not isinstance(mapped_kwargs, XComArg | XComItem | list | tuple):
                raise UnmappableValue(
                    f"task '{task_id}': expand_kwargs() takes a list of dicts or an XComArg, "
                    f"got {type(mapped_kwargs).__name__!r}"
                )
            if isinstance(mapped_kwargs, list | tuple):
                for position, item in enumerate(mapped_kwargs):
                    if not isinstance(item, dict):
                        raise UnmappableValue(
                            f"task '{task_id}': expand_kwargs() item {position} is a "
                            f"{type(item).__name__}, not a dict of keyword arguments"
                        )
                check_length(task_id, len(mapped_kwargs))
        return cls(
            task_id,
            operator_class=operator_class,
            partial_kwargs=kwargs,
            mapped=mapped,
            mapped_kwargs=mapped_kwargs,
            into=into,
            base_kwargs=base,
        )

    # -- what the scheduler sees ------------------------------------------------
    def mapping_spec(self) -> dict[str, Any]:
        """Lengths of literals and references to XComs: all the scheduler needs."""

        def one(value: Any) -> dict[str, Any]:
            if isinstance(value, XComArg | XComItem):
                return {"xcom": _reference(value)}
            return {"length": len(value)}

        if self.mapped is not None:
            return {
                "kind": "expand",
                "args": [{"name": name, **one(value)} for name, value in self.mapped.items()],
            }
        return {"kind": "expand_kwargs", "args": [{"name": None, **one(self.mapped_kwargs)}]}

    # -- what the worker runs ---------------------------------------------------
    def _values_at(self, map_index: int, pull: Puller) -> dict[str, Any]:
        """The keyword arguments of copy ``map_index``, resolving XComs with ``pull``."""

        def resolved(value: Any) -> list[Any]:
            if isinstance(value, XComArg | XComItem):
                ref = _reference(value)
                value = pull(ref["task_id"], ref["key"])
                if "item" in ref:
                    value = value[ref["item"]]
            return as_items(value)

        if self.mapped is None:
            items = resolved(self.mapped_kwargs)
            chosen = items[map_index]
            if not isinstance(chosen, dict):
                raise UnmappableValue(
                    f"task '{self.task_id}': expand_kwargs() item {map_index} is a "
                    f"{type(chosen).__name__}, not a dict of keyword arguments"
                )
            return dict(chosen)
        columns = {name: resolved(value) for name, value in self.mapped.items()}
        # The cross product's map_index-th item, the last argument varying fastest.
        chosen: dict[str, Any] = {}
        remainder = map_index
        for name in reversed(list(columns)):
            remainder, position = divmod(remainder, len(columns[name]))
            chosen[name] = columns[name][position]
        return {name: chosen[name] for name in columns}

    def unmap(self, map_index: int, pull: Puller) -> BaseOperator:
        """The real operator for one copy, with this task's id, DAG and settings."""
        values = self._values_at(map_index, pull)
        kwargs = dict(self.partial_kwargs)
        if self.into:
            kwargs[self.into] = {**(kwargs.get(self.into) or {}), **values}
        else:
            kwargs.update(values)
        settled = {name: getattr(self, name) for name in TASK_DEFAULTS}
        settled["params"] = self.params
        base = {k: v for k, v in self.base_kwargs.items() if k not in ("dag", "task_group")}
        operator = self.operator_class(
            task_id=self.task_id, dag=None, **{**base, **settled, **kwargs}
        )
        operator.task_id = self.task_id
        operator.dag = self.dag
        operator.task_group = self.task_group
        operator.upstream_task_ids = set(self.upstream_task_ids)
        operator.downstream_task_ids = set(self.downstream_task_ids)
        return operator

    def execute(self, context: dict[str, Any]) -> Any:
        raise DagDefinitionError(
            f"task '{self.task_id}' is mapped: each map_index runs its own copy (unmap())"
        )


def is_mapped(task: Any) -> bool:
    return isinstance(task, MappedOperator)


def _mapped_consumers(task: BaseOperator) -> list[tuple[str, dict[str, Any]]]:
    """(downstream task id, XCom reference) for each mapped task that maps over ``task``."""
    if task.dag is None or isinstance(task.dag.tasks.get(task.task_id), MappedOperator):
        return []  # a copy pushes one item: the downstream maps over all the copies' values
    found = []
    for task_id in sorted(task.downstream_task_ids):
        downstream = task.dag.tasks.get(task_id)
        if not isinstance(downstream, MappedOperator):
            continue
        for arg in downstream.mapping_spec()["args"]:
            ref = arg.get("xcom")
            if ref and ref["task_id"] == task.task_id:
                found.append((task_id, ref))
    return found


def check_pushed_for_mapping(task: BaseOperator, result: Any) -> None:
    """A return value that a downstream task maps over must be mappable, checked where
    Airflow checks it: in the upstream's try, which fails with the reason."""
    for consumer, ref in _mapped_consumers(task):
        value = result
        if ref["key"] != "return_value":
            value = result.get(ref["key"]) if isinstance(result, dict) else None
        if value is None or not task.do_xcom_push:
            raise UnmappableValue(
                f"task '{task.task_id}' did not push XCom {ref['key']!r} for task mapping "
                f"(downstream '{consumer}' maps over it)"
            )
        if "item" in ref:
            continue  # an item of the value: checked when the scheduler expands
        if not isinstance(value, list | tuple | dict):
            raise UnmappableValue(
                f"task '{task.task_id}': unmappable return type {type(value).__name__!r} "
                f"(downstream '{consumer}' maps over it: return a list or a dict)"
            )
        limit = get_config().core.max_map_length
        if len(value) > limit:
            raise UnmappableValue(
                f"task '{task.task_id}': unmappable return value length: {len(value)} > "
                f"{limit} ([core] max_map_length; downstream '{consumer}' maps over it)"
            )
