"""The OpenAPI part of ``/connections`` and ``/variables`` (merged into :func:`openapi.spec`)."""

from __future__ import annotations

from typing import Any

from flowsched.web.openapi import _json, _object, _op, _path, _ref

NULLABLE_TEXT = {"type": ["string", "null"]}

SCHEMAS: dict[str, Any] = {
    "Connection": _object(
        {
            "connection_id": {"type": "string"},
            "conn_type": {"type": "string"},
            "description": NULLABLE_TEXT,
            "host": NULLABLE_TEXT,
            "login": NULLABLE_TEXT,
            "schema": NULLABLE_TEXT,
            "port": {"type": ["integer", "null"]},
            "extra": {
                "type": ["string", "null"],
                "description": "JSON object as text; sensitive fields shown as ***",
            },
            "has_password": {"type": "boolean"},
        },
        optional=("host", "login", "schema", "port", "extra", "has_password"),
    ),
    "ConnectionBody": _object(
        {
            "connection_id": {"type": "string"},
            "conn_type": {"type": "string"},
            "description": NULLABLE_TEXT,
            "host": NULLABLE_TEXT,
            "login": NULLABLE_TEXT,
            "password": {**NULLABLE_TEXT, "writeOnly": True},
            "schema": NULLABLE_TEXT,
            "port": {"type": ["integer", "null"], "minimum": 0, "maximum": 65535},
            "extra": {
                "type": ["string", "object", "null"],
                "description": "A JSON object (or its text); *** keeps a stored value",
            },
        },
        optional=(
            "connection_id",
            "conn_type",
            "description",
            "host",
            "login",
            "password",
            "schema",
            "port",
            "extra",
        ),
    ),
    "Variable": _object(
        {
            "key": {"type": "string"},
            "value": {
                "type": ["string", "null"],
                "description": "null for viewers; *** when the key looks sensitive",
            },
            "description": NULLABLE_TEXT,
            "sensitive": {"type": "boolean"},
        }
    ),
    "VariableBody": _object(
        {"key": {"type": "string"}, "value": NULLABLE_TEXT, "description": NULLABLE_TEXT},
        optional=("key", "value", "description"),
    ),
}

DELETED = {"description": "Deleted"}


def _listing(name: str, item: str) -> dict[str, Any]:
    return _object(
        {name: {"type": "array", "items": _ref(item)}, "total_entries": {"type": "integer"}}
    )


def paths() -> dict[str, Any]:
    conn = "/connections/{connection_id}"
    var = "/variables/{variable_key}"
    return {
        "/connections": {
            "get": _op(
                "Connections stored in the database (never passwords)",
                _json(
                    _listing("connections", "Connection"),
                    "Connections by id; viewers get connection_id, conn_type and description only",
                ),
                errors=(401, 503),
            ),
            "post": _op(
                "Create a connection (needs core.fernet_key for a password or extra)",
                _json(_ref("Connection"), "The created connection"),
                status=201,
                role="admin",
                body=_ref("ConnectionBody"),
                errors=(400, 401, 409, 503),
            ),
        },
        conn: {
            "parameters": [_path("connection_id")],
            "get": _op(
                "One connection, without its password", _json(_ref("Connection"), "It"), role="op"
            ),
            "patch": _op(
                "Change fields of a connection; fields left out keep their value",
                _json(_ref("Connection"), "The connection after the change"),
                role="admin",
                body=_ref("ConnectionBody"),
                errors=(400, 401, 404, 503),
            ),
            "delete": _op(
                "Delete a connection",
                DELETED,
                status=204,
                role="admin",
                errors=(401, 404, 503),
            ),
        },
        "/variables": {
            "get": _op(
                "Variables stored in the database",
                _json(_listing("variables", "Variable"), "Variables by key"),
                errors=(401, 503),
            ),
            "post": _op(
                "Create a variable (needs core.fernet_key)",
                _json(_ref("Variable"), "The created variable"),
                status=201,
                role="op",
                body=_ref("VariableBody"),
                errors=(400, 401, 409, 503),
            ),
        },
        var: {
            "parameters": [_path("variable_key")],
            "get": _op("One variable", _json(_ref("Variable"), "The variable")),
            "patch": _op(
                "Change a variable's value or description (*** keeps the stored value)",
                _json(_ref("Variable"), "The variable after the change"),
                role="op",
                body=_ref("VariableBody"),
                errors=(400, 401, 404, 503),
            ),
            "delete": _op(
                "Delete a variable", DELETED, status=204, role="op", errors=(401, 404, 503)
            ),
        },
    }


RESPONSES: dict[str, Any] = {
    "E409": _json(_ref("Error"), "A connection or variable with that id already exists"),
}
