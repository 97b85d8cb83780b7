"""Jinja2 rendering of operators' templated fields (``{{ ds }}``, ``{{ params.x }}``)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

import jinja2
import jinja2.nativetypes


def ds_add(ds: str, days: int) -> str:
    """``{{ macros.ds_add(ds, -1) }}``: a YYYY-MM-DD date shifted by days."""
    return (date.fromisoformat(ds) + timedelta(days=days)).isoformat()


def ds_format(ds: str, input_format: str, output_format: str) -> str:
    return datetime.strptime(ds, input_format).strftime(output_format)


BUILTIN_MACROS: dict[str, Any] = {"ds_add": ds_add, "ds_format": ds_format}

_environment = jinja2.Environment(undefined=jinja2.StrictUndefined, keep_trailing_newline=True)


def template_environment(dag: Any) -> jinja2.Environment:
    """A DAG's environment, as Airflow's ``DAG.get_template_env``.

    Undefined names fail the task (``jinja2.StrictUndefined``, Airflow's default)
    unless the DAG sets ``template_undefined=jinja2.Undefined``; template files are
    found in ``template_searchpath`` and the DAG file's folder; the DAG's
    ``user_defined_filters`` are added, and ``render_template_as_native_obj``
    renders ``"{{ [1, 2] }}"`` as a list rather than a string.
    """
    if dag is None:
        return _environment
    cached = dag.__dict__.get("_template_env")
    if cached is not None:
        return cached
    searchpath = list(dag.template_searchpath)
    if dag.fileloc:
        from flowsched.config import get_config

        folder = Path(get_config().core.dags_folder)
        searchpath.append(str((folder / dag.fileloc).parent))
    options: dict[str, Any] = {
        "loader": jinja2.FileSystemLoader(searchpath),
        "undefined": dag.template_undefined,
        "extensions": ["jinja2.ext.do"],
        "keep_trailing_newline": True,
        **dag.jinja_environment_kwargs,
    }
    environment_class = (
        jinja2.nativetypes.NativeEnvironment
        if dag.render_template_as_native_obj
        else jinja2.Environment
    )
    environment = environment_class(**options)
    environment.filters.update(dag.user_defined_filters)
    dag.__dict__["_template_env"] = environment
    return environment


def render_value(
    value: Any,
    context: dict[str, Any],
    environment: jinja2.Environment | None = None,
    template_ext: Sequence[str] = (),
) -> Any:
    """Render strings (and strings inside lists, tuples, dicts) with ``context``.

    An XComArg renders as its task's return value; a string ending in one of the
    operator's ``template_ext`` (``script.sh``) is the path of a template file.
    """
    from flowsched.xcom_arg import RESOLVABLE

    environment = environment or _environment
    if isinstance(value, RESOLVABLE):
        return value.resolve(context)
    if isinstance(value, str):
        if template_ext and value.endswith(tuple(template_ext)):
            return environment.get_template(value).render(**context)
        if "{{" not in value and "{%" not in value:
            return value
        return environment.from_string(value).render(**context)
    if isinstance(value, list):
        return [render_value(item, context, environment, template_ext) for item in value]
    if isinstance(value, tuple):
        return tuple(render_value(item, context, environment, template_ext) for item in value)
    if isinstance(value, dict):
        return {
            key: render_value(item, context, environment, template_ext)
            for key, item in value.items()
        }
    return value
