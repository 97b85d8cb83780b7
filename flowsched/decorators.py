"""``@task`` and ``@dag``: plain functions become tasks and DAGs, as in Airflow's TaskFlow.

Calling a ``@task`` function inside a DAG adds a task and returns an XComArg that
wires the data flow; ``@task.branch`` and ``@task.short_circuit`` make the
branching operators. Calling a ``@dag`` function builds its DAG.
"""

from __future__ import annotations

import functools
import inspect
import typing
from collections.abc import Callable
from typing import Any

from flowsched.dag import DAG, DagContext
from flowsched.exceptions import DagDefinitionError
from flowsched.operators.bash import BashDecoratedOperator
from flowsched.operators.python import (
    BranchPythonOperator,
    PythonOperator,
    ShortCircuitOperator,
)
from flowsched.operators.virtualenv import ExternalPythonOperator, PythonVirtualenvOperator
from flowsched.sensors.python import DecoratedSensorOperator
from flowsched.task_group import task_group, task_group_for, unique_task_label
from flowsched.xcom_arg import DagParam, XComArg, find_xcom_args


def _returns_dict(func: Callable[..., Any]) -> bool:
    """``-> dict[str, int]`` means multiple_outputs=True unless told otherwise (Airflow)."""
    try:
        annotation = typing.get_type_hints(func).get("return")
    except Exception:  # unresolvable annotations: decide nothing from them
        return False
    return (typing.get_origin(annotation) or annotation) in (dict, typing.Dict)  # noqa: UP006


class _TaskFactory:
    def __init__(
        self, func: Callable[..., Any], options: dict[str, Any], operator_class: type
    ) -> None:
        functools.update_wrapper(self, func)
        self.func = func
        self.options = options
        self.operator_class = operator_class

    def _placed(self, how: str) -> tuple[DAG, str, dict[str, Any]]:
        """(DAG, task_id, operator options) of the task this call adds; ``how`` it was
        used (called, mapped) for the error when there is no DAG to add it to."""
        dag = self.options.get("dag") or DagContext.current()
        if dag is None:
            raise DagDefinitionError(
                f"@task '{self.func.__name__}' was {how} outside a DAG: "
                "use it inside `with DAG(...):` or a @dag function"
            )
        options = {key: value for key, value in self.options.items() if key != "dag"}
        group = task_group_for(dag, options.get("task_group"))
        task_id = options.pop("task_id", None) or unique_task_label(dag, group, self.func.__name__)
        if self.func.__doc__ and "doc_md" not in options:
            options["doc_md"] = inspect.cleandoc(self.func.__doc__)
        return dag, task_id, options

    def __call__(self, *args: Any, **kwargs: Any) -> XComArg:
        dag, task_id, options = self._placed("called")
        options.setdefault("multiple_outputs", _returns_dict(self.func))
        operator = self.operator_class(
            task_id,
            python_callable=self.func,
            op_args=args,
            op_kwargs=kwargs,
            dag=dag,
            **options,
        )
        for reference in find_xcom_args((args, kwargs)):
            reference.operator.set_downstream(operator)
        return XComArg(operator)

    def partial(self, **kwargs: Any) -> _TaskPartial:
        """Arguments of the function shared by every copy of a mapped task."""
        return _TaskPartial(self, kwargs)

    def expand(self, **mapped: Any) -> XComArg:
        return self.partial().expand(**mapped)

    def expand_kwargs(self, kwargs: Any) -> XComArg:
        return self.partial().expand_kwargs(kwargs)

    def _mapped(self, partial: dict[str, Any], **how: Any) -> XComArg:
        """Add the mapped task; its XComArg pulls every copy's result in map_index order."""
        from flowsched.mapped_operator import MappedOperator

        dag, task_id, options = self._placed("mapped")
        kwargs = {"task_id": task_id, "python_callable": self.func, "op_kwargs": partial}
        operator = MappedOperator.build(
            self.operator_class, {**options, **kwargs, "dag": dag}, into="op_kwargs", **how
        )
        return XComArg(operator)

    def override(self, **options: Any) -> _TaskFactory:
        return _TaskFactory(self.func, {**self.options, **options}, self.operator_class)


class _TaskPartial:
    """``my_task.partial(y=1)``: waits for ``.expand(x=[...])`` or ``.expand_kwargs(...)``."""

    def __init__(self, factory: _TaskFactory, kwargs: dict[str, Any]) -> None:
        self.factory = factory
        self.kwargs = kwargs

    def expand(self, **mapped: Any) -> XComArg:
        return self.factory._mapped(self.kwargs, mapped=mapped)

    def expand_kwargs(self, kwargs: Any) -> XComArg:
        return self.factory._mapped(self.kwargs, mapped_kwargs=kwargs)


def _decorator(operator_class: type) -> Callable[..., Any]:
    def decorate(python_callable: Callable[..., Any] | None = None, **options: Any) -> Any:
        if python_callable is not None:
            return _TaskFactory(python_callable, options, operator_class)
        return lambda f: _TaskFactory(f, options, operator_class)

    return decorate


class TaskDecoratorCollection:
    """``@task``, ``@task(retries=2)``, ``.branch``, ``.short_circuit``, ``.bash``, ``.sensor``."""

    python = staticmethod(_decorator(PythonOperator))
    bash = staticmethod(_decorator(BashDecoratedOperator))
    branch = staticmethod(_decorator(BranchPythonOperator))
    short_circuit = staticmethod(_decorator(ShortCircuitOperator))
    virtualenv = staticmethod(_decorator(PythonVirtualenvOperator))
    external_python = staticmethod(_decorator(ExternalPythonOperator))
    sensor = staticmethod(_decorator(DecoratedSensorOperator))

    def __call__(self, python_callable: Callable[..., Any] | None = None, **options: Any) -> Any:
        return self.python(python_callable, **options)


task = TaskDecoratorCollection()


def dag(dag_id: Any = None, **dag_kwargs: Any) -> Any:
    """``@dag(schedule=..., start_date=...)`` on a function; calling it builds the DAG.

    The DAG id is the function's name unless ``dag_id`` is given; the function's
    docstring becomes ``doc_md``; its keyword arguments become DAG ``params`` (their
    defaults) and reach the body as references resolved per run, as in Airflow.
    """
    if callable(dag_id):
        return dag()(dag_id)

    def decorate(func: Callable[..., Any]) -> Callable[..., DAG]:
        signature = inspect.signature(func)

        @functools.wraps(func)
        def build(*args: Any, **kwargs: Any) -> DAG:
            bound = signature.bind_partial(*args, **kwargs)
            bound.apply_defaults()
            options = dict(dag_kwargs)
            params = dict(options.pop("params", None) or {})
            params.update(bound.arguments)
            if func.__doc__ and "doc_md" not in options:
                options["doc_md"] = inspect.cleandoc(func.__doc__)
            with DAG(dag_id or func.__name__, params=params, **options) as built:
                func(**{name: DagParam(name, value) for name, value in bound.arguments.items()})
            return built

        return build

    return decorate


__all__ = ["dag", "task", "task_group"]
