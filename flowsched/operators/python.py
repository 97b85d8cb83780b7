"""PythonOperator: call a function; its return value becomes the task's XCom."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from flowsched.exceptions import DagDefinitionError
from flowsched.operators.base import BaseOperator
from flowsched.xcom_arg import resolve_xcom_args


def call_with_context(
    func: Callable[..., Any], args: Any, kwargs: dict[str, Any], context: dict[str, Any]
) -> Any:
    """Pass the context keys the function names (``ds``, ``ti``...) or all of them to ``**``."""
    signature = inspect.signature(func)
    accepts_var_kw = any(
        p.kind is inspect.Parameter.VAR_KEYWORD for p in signature.parameters.values()
    )
    extra = {
        key: value
        for key, value in context.items()
        if key not in kwargs and (accepts_var_kw or key in signature.parameters)
    }
    return func(*args, **kwargs, **extra)


class PythonOperator(BaseOperator):
    template_fields = ("op_args", "op_kwargs")

    def __init__(
        self,
        task_id: str,
        python_callable: Callable[..., Any],
        op_args: list[Any] | tuple[Any, ...] | None = None,
        op_kwargs: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        if not callable(python_callable):
            raise DagDefinitionError(f"task '{task_id}': python_callable must be callable")
        super().__init__(task_id, **kwargs)
        self.python_callable = python_callable
        self.op_args = list(op_args or [])
        self.op_kwargs = dict(op_kwargs or {})

    def execute(self, context: dict[str, Any]) -> Any:
        args = resolve_xcom_args(self.op_args, context)
        kwargs = resolve_xcom_args(self.op_kwargs, context)
        return call_with_context(self.python_callable, args, kwargs, context)
