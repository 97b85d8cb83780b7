"""The interface every secrets backend implements (Airflow's ``BaseSecretsBackend``)."""

from __future__ import annotations

from flowsched.connection import Connection


class SecretsBackend:
    """Looks up one connection or variable; None when this backend does not define it."""

    name = "base"

    def get_connection(self, conn_id: str) -> Connection | None:
        raise NotImplementedError

    def get_variable(self, key: str) -> str | None:
        raise NotImplementedError


def parse_connection(conn_id: str, value: object, where: str) -> Connection:
    """A URI string, or a mapping of fields; errors say where the definition was."""
    from flowsched.connection import InvalidConnection

    try:
        if isinstance(value, str):
            text = value.strip()
            if text.startswith("{"):
                return Connection.from_json(conn_id, text)
            return Connection(conn_id=conn_id, uri=text)
        if isinstance(value, dict):
            return Connection.from_dict(conn_id, value)
    except InvalidConnection as exc:
        raise InvalidConnection(f"{where}: {exc}") from None
    raise InvalidConnection(
        f"{where}: connection '{conn_id}' must be a URI string or a mapping of fields, "
        f"not {type(value).__name__}"
    )
