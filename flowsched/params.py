"""``Param``: a DAG's run-time input with a default and a JSON Schema, as in Airflow.

``DAG(params={"rows": Param(10, type="integer", minimum=1), "note": "plain"})``.
A plain value is a param with no rules. When a run is created (CLI, API, web
page: all through :func:`flowsched.operations.trigger_dag`) the run's conf is
laid over the defaults and every Param is validated with the ``jsonschema``
library; the error names the param. The specs travel in the serialized DAG
(:func:`serialize_params`), so the webserver builds the trigger form and
validates without importing DAG code. This module has no database imports.
"""

from __future__ import annotations

import copy
from typing import Any

import jsonschema

from flowsched.exceptions import DagDefinitionError, FlowschedError


class _NoDefault:
    """Marks a Param that has no default: a value must be given when the run is made."""

    def __repr__(self) -> str:
        return "NOTSET"


NOTSET: Any = _NoDefault()


class ParamValidationError(FlowschedError):
    """A run's params break their schema; the message names the param."""


class Param:
    """A param's default, description and schema (``type``, ``enum``, ``minimum``...)."""

    def __init__(self, default: Any = NOTSET, description: str | None = None, **schema: Any):
        self.value = default
        self.description = description
        # Airflow accepts the whole schema as schema={...} or as keyword arguments.
        self.schema: dict[str, Any] = dict(schema.pop("schema")) if "schema" in schema else schema

    @property
    def has_default(self) -> bool:
        return self.value is not NOTSET

    def resolve(self, value: Any = NOTSET, name: str = "") -> Any:
        """``value`` (or the default) if it fits the schema, else ParamValidationError."""
        final = self.value if value is NOTSET else value
        label = f"param '{name}'" if name else "param"
        if final is NOTSET:
            raise ParamValidationError(
                f"{label}: no value given and it has no default (it is required)"
            )
        try:
            jsonschema.validate(final, self.schema, format_checker=jsonschema.FormatChecker())
        except jsonschema.ValidationError as exc:
            raise ParamValidationError(f"Invalid input for {label}: {exc.message}") from None
        except jsonschema.SchemaError as exc:
            raise ParamValidationError(f"{label} has an invalid schema: {exc.message}") from None
        return final

    def dump(self) -> dict[str, Any]:
        """The JSON form stored in the serialized DAG."""
        spec: dict[str, Any] = {"description": self.description, "schema": self.schema}
        if self.has_default:
            spec["default"] = self.value
        return spec

    def __repr__(self) -> str:
        return f"Param({self.value!r}, schema={self.schema!r})"


def as_param(value: Any) -> Param:
    return value if isinstance(value, Param) else Param(value)


def param_values(params: dict[str, Any]) -> dict[str, Any]:
    """Plain values of a params dict (a Param's default; one without default is left out)."""
    out = {}
    for name, value in params.items():
        param = as_param(value)
        if param.has_default:
            out[name] = copy.deepcopy(param.value)
    return out


def check_definition(dag_id: str, params: dict[str, Any], scheduled: bool) -> None:
    """At import: defaults must fit their schema; a scheduled DAG needs every default."""
    for name, value in params.items():
        param = as_param(value)
        if not param.has_default:
            if scheduled:
                raise DagDefinitionError(
                    f"DAG '{dag_id}': param '{name}' has no default, so the DAG's schedule "
                    "must be None (a scheduled run has no one to give the value)"
                )
            continue
        try:
            param.resolve(name=name)
        except ParamValidationError as exc:
            raise DagDefinitionError(f"DAG '{dag_id}': default of {exc}") from None


def serialize_params(params: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """{name: {"default"?, "description", "schema"}} for the scheduler and webserver."""
    return {name: as_param(value).dump() for name, value in params.items()}


def params_from_specs(specs: dict[str, dict[str, Any]]) -> dict[str, Param]:
    return {
        name: Param(spec.get("default", NOTSET), spec.get("description"), schema=spec["schema"])
        for name, spec in specs.items()
    }


def validate_run_params(specs: dict[str, dict[str, Any]], conf: dict[str, Any] | None) -> None:
    """Raise ParamValidationError unless the conf laid over the defaults fits every Param.

    As in Airflow, a conf key that is not a param passes unchecked.
    """
    given = conf or {}
    for name, param in params_from_specs(specs).items():
        param.resolve(given.get(name, NOTSET), name=name)


def run_params(
    dag_params: dict[str, Any],
    task_params: dict[str, Any],
    conf: dict[str, Any] | None,
    conf_overrides: bool,
) -> dict[str, Any]:
    """The ``params`` a task sees: DAG's, then the task's, then (Airflow's
    ``[core] dag_run_conf_overrides_params``) the run's conf on top."""
    values = {**param_values(dag_params), **param_values(task_params)}
    if conf_overrides and conf:
        values.update(conf)
    return values
