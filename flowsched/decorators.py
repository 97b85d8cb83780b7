"""``@task``: a plain function becomes a task; calling it wires the data flow."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from flowsched.dag import DagContext
from flowsched.exceptions import DagDefinitionError
from flowsched.operators.python import PythonOperator
from flowsched.xcom_arg import XComArg, find_xcom_args


class _TaskFactory:
    def __init__(self, func: Callable[..., Any], options: dict[str, Any]) -> None:
        functools.update_wrapper(self, func)
        self.func = func
        self.options = options

    def __call__(self, *args: Any, **kwargs: Any) -> XComArg:
        dag = self.options.get("dag") or DagContext.current()
        if dag is None:
            raise DagDefinitionError(
                f"@task '{self.func.__name__}' was called outside a DAG: "
                "call it inside `with DAG(...):`"
            )
        options = {key: value for key, value in self.options.items() if key != "dag"}
        task_id = options.pop("task_id", None) or dag.unique_task_id(self.func.__name__)
        operator = PythonOperator(
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

    def override(self, **options: Any) -> _TaskFactory:
        return _TaskFactory(self.func, {**self.options, **options})


def task(func: Callable[..., Any] | None = None, **options: Any) -> Any:
    """Use as ``@task`` or ``@task(retries=2, queue="gpu")``."""
    if func is not None:
        return _TaskFactory(func, options)
    return lambda f: _TaskFactory(f, options)
