"""``/api/v1/connections`` and ``/api/v1/variables``: Airflow's REST shapes, flowsched's roles.

Anyone may list; reading a connection's details needs op; creating,
changing and deleting connections needs admin, variables op. Values are
shown as :mod:`flowsched.web.secret_fields` decides. The routes join the API
blueprint (token auth, JSON errors) when this module is imported.
"""

from __future__ import annotations

from typing import Any

from flask import abort, jsonify

from flowsched.connection import Connection, ConnectionNotFound
from flowsched.secrets.metastore import (
    AlreadyExists,
    add_connection,
    delete_connection,
    delete_variable,
    get_connection_record,
    get_variable_record,
    list_connections,
    list_variables,
    set_variable,
    update_connection,
)
from flowsched.secrets_masker import MASK
from flowsched.web.api import _body, bp
from flowsched.web.auth import actor, current_user, require
from flowsched.web.secret_fields import (
    CONNECTION_FIELDS,
    connection_json,
    keep_masked_extra,
    variable_json,
)
from flowsched.web.users import Role

CONNECTION_BODY = {"connection_id", *CONNECTION_FIELDS, "password"}


def _role() -> Role:
    user = current_user()
    assert user is not None  # the blueprint's before_request authenticated it
    return user.role


def _stored_connection(conn_id: str) -> Connection:
    conn = get_connection_record(conn_id)
    if conn is None:
        abort(404, description=f"no connection '{conn_id}' in the database")
    return conn


def _check_fields(data: dict[str, Any], allowed: set[str]) -> None:
    unknown = set(data) - allowed
    if unknown:
        abort(400, description=f"unknown field(s): {', '.join(sorted(unknown))}")
    for key, value in data.items():
        if key == "port":
            if value is not None and not isinstance(value, int):
                abort(400, description="'port' must be an integer or null")
        elif key == "extra":
            if value is not None and not isinstance(value, str | dict):
                abort(400, description="'extra' must be a JSON object, its text, or null")
        elif value is not None and not isinstance(value, str):
            abort(400, description=f"'{key}' must be a string or null")


# -- connections -------------------------------------------------------------------
@bp.route("/connections")
def list_connections_api() -> Any:
    role = _role()
    found = [connection_json(conn, role) for conn in list_connections()]
    return jsonify(connections=found, total_entries=len(found))


@bp.route("/connections", methods=["POST"])
@require(Role.ADMIN)
def create_connection() -> Any:
    data = _body()
    _check_fields(data, CONNECTION_BODY)
    conn_id = data.pop("connection_id", None)
    if not conn_id or not data.get("conn_type"):
        abort(400, description="'connection_id' and 'conn_type' are required")
    data["extra"] = keep_masked_extra(data.get("extra"), None)
    try:
        add_connection(Connection.from_dict(conn_id, data), actor=actor())
    except AlreadyExists as exc:
        abort(409, description=str(exc))
    return jsonify(connection_json(_stored_connection(conn_id), _role())), 201


@bp.route("/connections/<conn_id>")
@require(Role.OP)
def get_connection_api(conn_id: str) -> Any:
    return jsonify(connection_json(_stored_connection(conn_id), _role()))


@bp.route("/connections/<conn_id>", methods=["PATCH"])
@require(Role.ADMIN)
def patch_connection(conn_id: str) -> Any:
    data = _body()
    _check_fields(data, CONNECTION_BODY)
    if data.pop("connection_id", conn_id) != conn_id:
        abort(400, description="'connection_id' cannot be changed: create a new connection")
    old = _stored_connection(conn_id)
    if "extra" in data:
        data["extra"] = keep_masked_extra(data["extra"], old)
    try:
        conn = update_connection(conn_id, data, actor=actor())
    except ConnectionNotFound as exc:  # deleted meanwhile
        abort(404, description=str(exc))
    return jsonify(connection_json(conn, _role()))


@bp.route("/connections/<conn_id>", methods=["DELETE"])
@require(Role.ADMIN)
def delete_connection_api(conn_id: str) -> Any:
    try:
        delete_connection(conn_id, actor=actor())
    except ConnectionNotFound as exc:
        abort(404, description=str(exc))
    return "", 204


# -- variables ---------------------------------------------------------------------------
def _variable_response(key: str) -> Any:
    stored = get_variable_record(key)
    if stored is None:
        abort(404, description=f"no variable '{key}' in the database")
    return jsonify(variable_json(stored.key, stored.val, stored.description, _role()))


@bp.route("/variables")
def list_variables_api() -> Any:
    role = _role()
    found = [
        variable_json(v.key, v.val, v.description, role)
        for v in list_variables(values=role.allows(Role.OP))
    ]
    return jsonify(variables=found, total_entries=len(found))


@bp.route("/variables", methods=["POST"])
@require(Role.OP)
def create_variable() -> Any:
    data = _body()
    _check_fields(data, {"key", "value", "description"})
    key, value = data.get("key"), data.get("value")
    if not key or value is None:
        abort(400, description="'key' and 'value' are required")
    if get_variable_record(key) is not None:
        abort(409, description=f"a variable '{key}' already exists: PATCH it")
    set_variable(key, value, data.get("description"), actor=actor())
    response = _variable_response(key)
    return response, 201


@bp.route("/variables/<path:key>")
def get_variable_api(key: str) -> Any:
    return _variable_response(key)


@bp.route("/variables/<path:key>", methods=["PATCH"])
@require(Role.OP)
def patch_variable(key: str) -> Any:
    data = _body()
    _check_fields(data, {"key", "value", "description"})
    if data.pop("key", key) != key:
        abort(400, description="'key' cannot be changed: create a new variable")
    stored = get_variable_record(key)
    if stored is None:
        abort(404, description=f"no variable '{key}' in the database")
    value = data.get("value", stored.val)
    if value is None or value == MASK:  # the masked view sent back: keep the secret
        value = stored.val
    description = data.get("description", stored.description)
    set_variable(key, value or "", description, actor=actor())
    return _variable_response(key)


@bp.route("/variables/<path:key>", methods=["DELETE"])
@require(Role.OP)
def delete_variable_api(key: str) -> Any:
    if not delete_variable(key, actor=actor()):
        abort(404, description=f"no variable '{key}' in the database")
    return "", 204
