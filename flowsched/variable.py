"""``Variable``: a named value for DAGs and templates, with Airflow's class methods.

``Variable.get(key, default_var=..., deserialize_json=...)`` looks the key up
in the environment (``FLOWSCHED_VAR_<KEY>``), then the file backend, then the
metadata database, as Airflow does; ``Variable.set`` and ``Variable.delete``
write the database (values encrypted with ``core.fernet_key``).
"""

from __future__ import annotations

import json
from typing import Any

from flowsched.exceptions import FlowschedError


class _NotSet:
    def __repr__(self) -> str:
        return "NOTSET"


NOTSET: Any = _NotSet()


class InvalidVariable(FlowschedError):
    """A variable's key or value is malformed; the message names the key."""


class Variable:
    """A key, its value (text) and a description."""

    def __init__(
        self, key: str | None = None, val: str | None = None, description: str | None = None
    ) -> None:
        self.key = key
        self.val = val
        self.description = description

    def __repr__(self) -> str:
        return f"Variable({self.key!r})"

    @classmethod
    def get(cls, key: str, default_var: Any = NOTSET, deserialize_json: bool = False) -> Any:
        """The value of ``key``; ``default_var`` if it is not defined anywhere, else KeyError.

        With ``deserialize_json`` the value is parsed as JSON.
        """
        from flowsched.secrets import get_variable

        value = get_variable(key)
        if value is None:
            if default_var is not NOTSET:
                return default_var
            raise KeyError(f"Variable {key} does not exist")
        if deserialize_json:
            try:
                return json.loads(value)
            except json.JSONDecodeError as exc:
                raise InvalidVariable(f"variable '{key}' is not valid JSON: {exc}") from None
        return value

    @classmethod
    def set(
        cls,
        key: str,
        value: Any,
        description: str | None = None,
        serialize_json: bool = False,
    ) -> None:
        """Store ``value`` (JSON-dumped with ``serialize_json``) in the metadata database."""
        from flowsched.secrets.metastore import set_variable

        text = json.dumps(value, indent=2) if serialize_json else str(value)
        set_variable(key, text, description)

    @classmethod
    def setdefault(
        cls,
        key: str,
        default: Any,
        description: str | None = None,
        deserialize_json: bool = False,
    ) -> Any:
        """The value of ``key``; if it is not defined anywhere, store ``default`` and return it."""
        value = cls.get(key, default_var=None, deserialize_json=deserialize_json)
        if value is not None:
            return value
        if default is None:
            raise ValueError("Default Value must be set")
        cls.set(key, default, description=description, serialize_json=deserialize_json)
        return default

    @classmethod
    def delete(cls, key: str) -> int:
        """Remove ``key`` from the metadata database; the number of rows removed (0 or 1)."""
        from flowsched.secrets.metastore import delete_variable

        return delete_variable(key)

    @classmethod
    def update(cls, key: str, value: Any, serialize_json: bool = False) -> None:
        """Change an existing variable (KeyError if the database does not hold it)."""
        from flowsched.secrets.metastore import get_variable_record

        record = get_variable_record(key)
        if record is None:
            raise KeyError(f"Variable {key} does not exist")
        cls.set(key, value, description=record.description, serialize_json=serialize_json)
