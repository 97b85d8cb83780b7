"""``{{ var.value.k }}``, ``{{ var.json.k.field }}`` and ``{{ conn.my_db.host }}`` in templates.

As in Airflow, each lookup goes through :class:`flowsched.Variable` and
:class:`flowsched.Connection` (environment, files, database) when the
template is rendered, not when the context is built, so a task that uses
none of them costs no lookup; ``.get(key, default)`` is there for optional ones.
"""

from __future__ import annotations

from typing import Any

from flowsched.connection import Connection, ConnectionNotFound
from flowsched.variable import NOTSET, Variable


class _VariableValues:
    def __init__(self, deserialize_json: bool) -> None:
        self._json = deserialize_json

    def __getattr__(self, key: str) -> Any:
        if key.startswith("__"):
            raise AttributeError(key)
        return self[key]

    def __getitem__(self, key: str) -> Any:
        return Variable.get(key, deserialize_json=self._json)

    def get(self, key: str, default_var: Any = NOTSET) -> Any:
        return Variable.get(key, default_var=default_var, deserialize_json=self._json)

    def __repr__(self) -> str:
        return "{}"


class VariableAccessor:
    """``var.value.<key>`` (text) and ``var.json.<key>`` (parsed JSON)."""

    def __init__(self) -> None:
        self.value = _VariableValues(False)
        self.json = _VariableValues(True)


class ConnectionAccessor:
    """``conn.<conn_id>`` and ``conn.get(conn_id, default)``."""

    def __getattr__(self, conn_id: str) -> Connection:
        if conn_id.startswith("__"):
            raise AttributeError(conn_id)
        return Connection.get(conn_id)

    __getitem__ = __getattr__

    def get(self, conn_id: str, default_conn: Any = None) -> Any:
        try:
            return Connection.get(conn_id)
        except ConnectionNotFound:
            return default_conn


def template_accessors() -> dict[str, Any]:
    """The ``var`` and ``conn`` entries of a task's context."""
    return {"var": VariableAccessor(), "conn": ConnectionAccessor()}
