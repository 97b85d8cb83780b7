"""``Connection``: how to reach an external system, kept out of DAG files.

The fields and the URI form are Airflow's, so ``AIRFLOW_CONN_*`` values,
``airflow connections export`` files and ``conn.get_uri()`` strings port as
they are: ``conn-type://login:password@host:port/schema?extra_key=value``,
with ``?__extra__=<json>`` when the extra does not fit a flat query string.

This module has no database import: a Connection is a plain value that the
secrets backends (:mod:`flowsched.secrets`) build from the environment, a
file or the metadata database.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import parse_qsl, quote, unquote, urlencode, urlsplit

from flowsched.exceptions import FlowschedError

EXTRA_KEY = "__extra__"
FIELDS = ("conn_type", "description", "host", "login", "password", "schema", "port", "extra")


class InvalidConnection(FlowschedError):
    """A connection definition is malformed; the message names the connection and field."""


class ConnectionNotFound(FlowschedError):
    """No backend (environment, files, database) defines the conn_id."""


def _hostname(parts: Any) -> str:
    """The host as written: urlsplit lowercases it and cannot hold a quoted '/'."""
    netloc = parts.netloc.rsplit("@", 1)[-1]
    if netloc.startswith("["):  # IPv6 literal
        return netloc[: netloc.index("]") + 1]
    return unquote(netloc.split(":", 1)[0])


class Connection:
    """Airflow's ``Connection``: conn_id, conn_type, host, port, login, password, schema, extra.

    ``extra`` is a JSON object as text (a dict is accepted and dumped);
    ``extra_dejson`` is its parsed form. Build from a URI with ``uri=...``.
    """

    def __init__(
        self,
        conn_id: str | None = None,
        conn_type: str | None = None,
        description: str | None = None,
        host: str | None = None,
        login: str | None = None,
        password: str | None = None,
        schema: str | None = None,
        port: int | None = None,
        extra: str | dict[str, Any] | None = None,
        uri: str | None = None,
    ) -> None:
        self.conn_id = conn_id
        self.description = description
        if extra is not None and not isinstance(extra, str):
            extra = json.dumps(extra)
        if uri and (conn_type or host or login or password or schema or port or extra):
            raise InvalidConnection(
                f"connection '{conn_id}': give either a URI or separate fields "
                "(conn_type, host, login, password, schema, port, extra), not both"
            )
        if uri:
            self._parse_from_uri(uri)
        else:
            self.conn_type = conn_type
            self.host = host
            self.login = login
            self.password = password
            self.schema = schema
            self.port = _port(port, conn_id)
            self.extra = extra or None
        self.extra_dejson  # noqa: B018 (checks the extra is a JSON object, early)

    # -- URI ---------------------------------------------------------------
    def _parse_from_uri(self, uri: str) -> None:
        parts = urlsplit(uri)
        if not parts.scheme:
            raise InvalidConnection(
                f"connection '{self.conn_id}': {uri!r} is not a URI "
                "(expected conn-type://login:password@host:port/schema?extra=...)"
            )
        conn_type = parts.scheme
        if conn_type == "postgresql":
            conn_type = "postgres"
        self.conn_type = conn_type.replace("-", "_")
        self.host = _hostname(parts) or None
        self.schema = unquote(parts.path[1:]) if parts.path[1:] else None
        self.login = unquote(parts.username) if parts.username else None
        self.password = unquote(parts.password) if parts.password else None
        try:
            self.port = parts.port
        except ValueError:
            raise InvalidConnection(
                f"connection '{self.conn_id}': the port in the URI is not a number 0-65535"
            ) from None
        self.extra = None
        if parts.query:
            query = dict(parse_qsl(parts.query, keep_blank_values=True))
            self.extra = query[EXTRA_KEY] if EXTRA_KEY in query else json.dumps(query)

    def get_uri(self) -> str:
        """The connection as one URI (Airflow's format): the inverse of ``uri=...``."""
        uri = f"{str(self.conn_type).lower().replace('_', '-')}://"
        authority = ""
        if self.login is not None:
            authority += quote(self.login, safe="")
        if self.password is not None:
            authority += ":" + quote(self.password, safe="")
        if authority:
            uri += authority + "@"
        host = quote(self.host, safe="[]") if self.host else ""
        if self.port:
            host = f"{host}:{self.port}" if host else f"@:{self.port}"
        if self.schema:
            host += "/" + quote(self.schema, safe="")
        uri += host
        if self.extra:
            extra = self.extra_dejson
            flat = all(isinstance(v, str) for v in extra.values())
            query = urlencode(extra) if flat else ""
            if flat and extra == dict(parse_qsl(query, keep_blank_values=True)):
                uri += "?" + query
            else:
                uri += "?" + urlencode({EXTRA_KEY: self.extra})
        return uri

    def get_password(self) -> str | None:
        return self.password

    def get_extra(self) -> str | None:
        return self.extra

    # -- extra ---------------------------------------------------------------
    @property
    def extra_dejson(self) -> dict[str, Any]:
        """The extra as a dict ({} when empty); a malformed extra is an error naming the conn."""
        if not self.extra:
            return {}
        try:
            value = json.loads(self.extra)
        except json.JSONDecodeError as exc:
            raise InvalidConnection(
                f"connection '{self.conn_id}': extra is not valid JSON: {exc}"
            ) from None
        if not isinstance(value, dict):
            raise InvalidConnection(f"connection '{self.conn_id}': extra must be a JSON object")
        return value

    # -- other forms -----------------------------------------------------------
    def to_dict(self, *, password: bool = True) -> dict[str, Any]:
        """Airflow's export shape: every field, extra as text (password optional)."""
        out: dict[str, Any] = {
            "conn_type": self.conn_type,
            "description": self.description,
            "host": self.host,
            "login": self.login,
            "password": self.password,
            "schema": self.schema,
            "port": self.port,
            "extra": self.extra,
        }
        if not password:
            del out["password"]
        return out

    @classmethod
    def from_dict(cls, conn_id: str, data: dict[str, Any]) -> Connection:
        """From a mapping of fields (as in files and FLOWSCHED_CONN_ JSON); unknown keys refused.

        ``extra`` may be a JSON object or its text; ``uri`` may stand for the other fields.
        """
        unknown = set(data) - {*FIELDS, "uri", "conn_id"}
        if unknown:
            raise InvalidConnection(
                f"connection '{conn_id}': unknown field(s) {', '.join(sorted(unknown))} "
                f"(known: {', '.join(FIELDS)}, uri)"
            )
        fields = {key: value for key, value in data.items() if key != "conn_id"}
        for key in ("conn_type", "description", "host", "login", "password", "schema", "uri"):
            value = fields.get(key)
            if value is not None and not isinstance(value, str):
                fields[key] = str(value)
        if "uri" in fields and "description" in fields:
            description = fields.pop("description")
            conn = cls(conn_id=conn_id, **fields)
            conn.description = description
            return conn
        return cls(conn_id=conn_id, **fields)

    @classmethod
    def from_json(cls, conn_id: str, text: str) -> Connection:
        """From Airflow's JSON serialization (``AIRFLOW_CONN_X='{"conn_type": ...}'``)."""
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise InvalidConnection(f"connection '{conn_id}': not valid JSON: {exc}") from None
        if not isinstance(data, dict):
            raise InvalidConnection(f"connection '{conn_id}': the JSON must be an object")
        return cls.from_dict(conn_id, data)

    def as_json(self) -> str:
        return json.dumps({k: v for k, v in self.to_dict().items() if v is not None})

    @classmethod
    def get(cls, conn_id: str) -> Connection:
        """Look ``conn_id`` up: environment, then files, then database (ConnectionNotFound)."""
        from flowsched.secrets import get_connection

        return get_connection(conn_id)

    get_connection_from_secrets = get

    def __repr__(self) -> str:
        return f"Connection({self.conn_id!r}, conn_type={self.conn_type!r}, host={self.host!r})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Connection):
            return NotImplemented
        return self.conn_id == other.conn_id and self.to_dict() == other.to_dict()

    __hash__ = None  # type: ignore[assignment]


def _port(value: Any, conn_id: str | None) -> int | None:
    if value is None or value == "":
        return None
    try:
        port = int(value)
    except (TypeError, ValueError):
        raise InvalidConnection(f"connection '{conn_id}': port {value!r} is not a number") from None
    if not 0 <= port <= 65535:
        raise InvalidConnection(f"connection '{conn_id}': port {port} is not in 0-65535")
    return port
