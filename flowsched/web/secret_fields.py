"""What the pages and the API may show of connections and variables, and how edits merge.

One place decides it, so pages and API never differ:

- a password is never sent back, to anyone; an edit that leaves it out keeps it;
- extra fields with sensitive names (Airflow's ``DEFAULT_SENSITIVE_FIELDS``)
  are sent as ``***``, and an edit that sends ``***`` back keeps the stored value;
- a viewer sees which connections and variables exist, not their values;
- a variable whose key looks sensitive is shown as ``***`` even to admins
  (tasks and the CLI still read it); an edit that sends ``***`` keeps it.
"""

from __future__ import annotations

import json
from typing import Any

from flowsched.connection import Connection, InvalidConnection
from flowsched.secrets_masker import MASK, should_hide_value_for_key
from flowsched.web.users import Role

CONNECTION_FIELDS = ("conn_type", "description", "host", "login", "schema", "port", "extra")


def masked_extra(conn: Connection) -> dict[str, Any]:
    return {
        key: (MASK if should_hide_value_for_key(key) and value not in ("", None) else value)
        for key, value in conn.extra_dejson.items()
    }


def connection_json(conn: Connection, role: Role) -> dict[str, Any]:
    """A connection as the API returns it: no password; details for op and admin only."""
    out: dict[str, Any] = {
        "connection_id": conn.conn_id,
        "conn_type": conn.conn_type,
        "description": conn.description,
    }
    if role.allows(Role.OP):
        extra = masked_extra(conn)
        out.update(
            host=conn.host,
            login=conn.login,
            schema=conn.schema,
            port=conn.port,
            extra=json.dumps(extra) if extra else None,
            has_password=bool(conn.password),
        )
    return out


def keep_masked_extra(new_extra: Any, old: Connection | None) -> str | None:
    """The extra to store: ``***`` values replaced by the stored ones, so a round trip
    through a masked view never overwrites a secret with the mask."""
    if new_extra in (None, ""):
        return None
    if isinstance(new_extra, str):
        try:
            parsed = json.loads(new_extra)
        except json.JSONDecodeError as exc:
            raise InvalidConnection(f"extra is not valid JSON: {exc}") from None
    else:
        parsed = new_extra
    if not isinstance(parsed, dict):
        raise InvalidConnection('extra must be a JSON object, like {"key": "value"}')
    stored = old.extra_dejson if old is not None else {}
    for key, value in parsed.items():
        if value == MASK and key in stored:
            parsed[key] = stored[key]
    return json.dumps(parsed)


def variable_value(key: str, value: str | None, role: Role) -> str | None:
    """None for viewers; ``***`` for sensitive-looking keys; else the value."""
    if not role.allows(Role.OP) or value is None:
        return None
    return MASK if should_hide_value_for_key(key) else value


def variable_json(key: str, value: str | None, description: str | None, role: Role) -> dict:
    return {
        "key": key,
        "value": variable_value(key, value, role),
        "description": description,
        "sensitive": should_hide_value_for_key(key),
    }
