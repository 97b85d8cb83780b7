"""The Connections and Variables pages: list, create, edit, delete.

Lists join the read-only ``pages`` blueprint; forms and deletes the
``actions`` blueprint (login, CSRF, roles as every other action). What is
shown follows :mod:`flowsched.web.secret_fields`: never a password, sensitive
extra fields and variables as ``***``, no values at all for viewers. A
refused form is shown again with what was typed (but never the password) and
the reason.
"""

from __future__ import annotations

import json
from typing import Any

from flask import flash, redirect, render_template, request, url_for

from flowsched.connection import Connection, ConnectionNotFound
from flowsched.exceptions import FlowschedError
from flowsched.secrets.metastore import (
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
from flowsched.secrets_masker import MASK, should_hide_value_for_key
from flowsched.web.actions import bp as actions_bp
from flowsched.web.auth import actor, current_user, require
from flowsched.web.secret_fields import keep_masked_extra, masked_extra, variable_value
from flowsched.web.users import Role
from flowsched.web.views import bp as pages_bp

FORM_FIELDS = ("conn_id", "conn_type", "description", "host", "port", "login", "schema", "extra")


def _role() -> Role:
    user = current_user()
    assert user is not None
    return user.role


# -- connections -------------------------------------------------------------------
@pages_bp.route("/connections")
def connections() -> Any:
    return render_template("connections.html", connections=list_connections(), role=_role())


def _connection_form(conn: Connection | None) -> dict[str, str]:
    if conn is None:
        return dict.fromkeys(FORM_FIELDS, "")
    extra = masked_extra(conn)
    return {
        "conn_id": conn.conn_id or "",
        "conn_type": conn.conn_type or "",
        "description": conn.description or "",
        "host": conn.host or "",
        "port": "" if conn.port is None else str(conn.port),
        "login": conn.login or "",
        "schema": conn.schema or "",
        "extra": _pretty(extra) if extra else "",
    }


def _pretty(value: dict[str, Any]) -> str:
    return json.dumps(value, indent=2)


@actions_bp.route("/connections/new", methods=["GET", "POST"])
@actions_bp.route("/connections/<conn_id>/edit", methods=["GET", "POST"])
@require(Role.ADMIN)
def connection_form(conn_id: str | None = None) -> Any:
    old = None
    if conn_id is not None:
        old = get_connection_record(conn_id)
        if old is None:
            flash(f"No connection '{conn_id}'.", "error")
            return redirect(url_for("pages.connections"))
    has_password = bool(old and old.password)
    if request.method == "GET":
        return render_template(
            "connection_form.html",
            form=_connection_form(old),
            editing=old is not None,
            has_password=has_password,
            error=None,
        )
    form = {name: request.form.get(name, "").strip() for name in FORM_FIELDS}
    form["extra"] = request.form.get("extra", "")
    password = request.form.get("password", "")
    try:
        fields: dict[str, Any] = {
            key: (form[key] or None) for key in FORM_FIELDS if key not in ("conn_id", "extra")
        }
        fields["extra"] = keep_masked_extra(form["extra"], old)
        if old is None:
            add_connection(
                Connection.from_dict(form["conn_id"], {**fields, "password": password or None}),
                actor=actor(),
            )
            message = f"Added connection {form['conn_id']}."
        else:
            if password:
                fields["password"] = password
            elif request.form.get("clear_password"):
                fields["password"] = None
            update_connection(old.conn_id or "", fields, actor=actor())
            message = f"Saved connection {old.conn_id}."
    except FlowschedError as exc:
        if old is not None:
            form["conn_id"] = old.conn_id or ""
        page = render_template(
            "connection_form.html",
            form=form,
            editing=old is not None,
            has_password=has_password,
            error=str(exc),
        )
        return page, 400
    flash(message, "success")
    return redirect(url_for("pages.connections"))


@actions_bp.route("/connections/<conn_id>/delete", methods=["POST"])
@require(Role.ADMIN)
def connection_delete(conn_id: str) -> Any:
    try:
        delete_connection(conn_id, actor=actor())
    except ConnectionNotFound as exc:
        flash(f"Not deleted: {exc}", "error")
    else:
        flash(f"Deleted connection {conn_id}.", "success")
    return redirect(url_for("pages.connections"))


# -- variables ---------------------------------------------------------------------------
@pages_bp.route("/variables")
def variables() -> Any:
    role = _role()
    rows = [
        (v, variable_value(v.key, v.val, role)) for v in list_variables(values=role.allows(Role.OP))
    ]
    return render_template("variables.html", rows=rows, role=role)


@actions_bp.route("/variables/new", methods=["GET", "POST"])
@actions_bp.route("/variables/edit/<path:key>", methods=["GET", "POST"])
@require(Role.OP)
def variable_form(key: str | None = None) -> Any:
    stored = None
    if key is not None:
        stored = get_variable_record(key)
        if stored is None:
            flash(f"No variable '{key}'.", "error")
            return redirect(url_for("pages.variables"))
    hidden = stored is not None and should_hide_value_for_key(stored.key)
    if request.method == "GET":
        form = {
            "key": stored.key if stored else "",
            "value": "" if stored is None or hidden else stored.val or "",
            "description": (stored.description or "") if stored else "",
        }
        return render_template(
            "variable_form.html", form=form, editing=stored is not None, hidden=hidden, error=None
        )
    form = {
        "key": stored.key if stored else request.form.get("key", "").strip(),
        "value": request.form.get("value", ""),
        "description": request.form.get("description", "").strip(),
    }
    value = form["value"]
    if stored is not None and hidden and value in ("", MASK):
        value = stored.val or ""  # a hidden value left as it was
    try:
        if stored is None and get_variable_record(form["key"]) is not None:
            raise FlowschedError(f"a variable '{form['key']}' already exists: edit it instead")
        set_variable(form["key"], value, form["description"] or None, actor=actor())
    except FlowschedError as exc:
        if hidden:
            form["value"] = ""
        page = render_template(
            "variable_form.html",
            form=form,
            editing=stored is not None,
            hidden=hidden,
            error=str(exc),
        )
        return page, 400
    flash(f"Saved variable {form['key']}.", "success")
    return redirect(url_for("pages.variables"))


@actions_bp.route("/variables/delete/<path:key>", methods=["POST"])
@require(Role.OP)
def variable_delete(key: str) -> Any:
    if delete_variable(key, actor=actor()):
        flash(f"Deleted variable {key}.", "success")
    else:
        flash(f"Not deleted: no variable '{key}'.", "error")
    return redirect(url_for("pages.variables"))
