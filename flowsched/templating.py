"""Jinja2 rendering of operators' templated fields (``{{ ds }}``, ``{{ params.x }}``)."""

from __future__ import annotations

from datetime import date, datetime, timedelta
from typing import Any

import jinja2


def ds_add(ds: str, days: int) -> str:
    """``{{ macros.ds_add(ds, -1) }}``: a YYYY-MM-DD date shifted by days."""
    return (date.fromisoformat(ds) + timedelta(days=days)).isoformat()


def ds_format(ds: str, input_format: str, output_format: str) -> str:
    return datetime.strptime(ds, input_format).strftime(output_format)


BUILTIN_MACROS: dict[str, Any] = {"ds_add": ds_add, "ds_format": ds_format}

_environment = jinja2.Environment(undefined=jinja2.StrictUndefined, keep_trailing_newline=True)


def render_value(value: Any, context: dict[str, Any]) -> Any:
    if isinstance(value, str):
        if "{{" not in value and "{%" not in value:
            return value
        return _environment.from_string(value).render(**context)
    if isinstance(value, list):
        return [render_value(item, context) for item in value]
    if isinstance(value, tuple):
        return tuple(render_value(item, context) for item in value)
    if isinstance(value, dict):
        return {key: render_value(item, context) for key, item in value.items()}
    return value
