"""The trigger page's form, built from a DAG's params (their JSON Schemas).

Each param becomes a field by its schema: ``enum`` a list to pick from,
``boolean`` a checkbox, ``integer``/``number`` a number box, ``array``/``object``
a JSON box, anything else a text box. The submitted fields become the run's
conf; keys written in the raw JSON box win over them. What the values must be
is checked once, by :func:`flowsched.operations.trigger_dag`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from flowsched.exceptions import FlowschedError

FIELD_PREFIX = "param:"
SHOWN_PREFIX = "param-shown:"  # marks a checkbox that was on the form (unchecked sends nothing)


@dataclass(frozen=True)
class ParamField:
    name: str
    kind: str  # select, checkbox, number, json, text
    title: str
    description: str
    value: Any  # what the field shows
    options: tuple[Any, ...] = ()
    required: bool = False
    step: str = "any"


def _main_type(schema: dict[str, Any]) -> str | None:
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), None)
    return kind


def _shown(value: Any, kind: str) -> Any:
    if value is None:
        return ""
    if kind == "json":
        return json.dumps(value, indent=2)
    return value


def form_fields(specs: dict[str, dict[str, Any]], submitted: Any = None) -> list[ParamField]:
    """One field per param, showing the default or what was just submitted."""
    fields = []
    for name, spec in specs.items():
        schema = spec.get("schema") or {}
        kind = {
            "boolean": "checkbox",
            "integer": "number",
            "number": "number",
            "array": "json",
            "object": "json",
        }.get(_main_type(schema) or "", "text")
        if "enum" in schema:
            kind = "select"
        value: Any = spec.get("default")
        if submitted is not None and FIELD_PREFIX + name in submitted:
            value = submitted.get(FIELD_PREFIX + name)
        elif submitted is not None and SHOWN_PREFIX + name in submitted:
            value = False  # a checkbox sent back unchecked
        else:
            value = _shown(value, kind)
        fields.append(
            ParamField(
                name=name,
                kind=kind,
                title=schema.get("title") or name,
                description=spec.get("description") or schema.get("description") or "",
                value=value,
                options=tuple(schema.get("enum", ())),
                required="default" not in spec,
                step="1" if _main_type(schema) == "integer" else "any",
            )
        )
    return fields


def _parse(name: str, kind: str, schema: dict[str, Any], text: str) -> Any:
    main = _main_type(schema)
    if kind == "select":
        # The option's text back to the enum value it stands for (1 stays an int).
        for option in schema.get("enum", ()):
            if str(option) == text or (option is None and text == ""):
                return option
        return text
    if kind == "number":
        try:
            return int(text) if main == "integer" and text.lstrip("-").isdigit() else float(text)
        except ValueError:
            raise FlowschedError(f"param '{name}': {text!r} is not a number") from None
    if kind == "json":
        try:
            return json.loads(text)
        except json.JSONDecodeError as exc:
            raise FlowschedError(f"param '{name}': not valid JSON ({exc.msg})") from None
    return text


def conf_from_form(specs: dict[str, dict[str, Any]], form: Any) -> dict[str, Any]:
    """The conf the param fields give; an empty box means "use the default"."""
    conf: dict[str, Any] = {}
    for name, spec in specs.items():
        schema = spec.get("schema") or {}
        field = next(f for f in form_fields({name: spec}) if f.name == name)
        if field.kind == "checkbox":
            if SHOWN_PREFIX + name in form:
                conf[name] = FIELD_PREFIX + name in form
            continue
        text = form.get(FIELD_PREFIX + name)
        if text is None or (text == "" and field.kind != "select"):
            continue
        conf[name] = _parse(name, field.kind, schema, text)
    return conf
