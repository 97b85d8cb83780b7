"""``BaseHook``: Airflow's base class of hooks, with ``get_connection``."""

from __future__ import annotations

from flowsched.connection import Connection


class BaseHook:
    """Base of the classes that talk to an external system through a connection.

    ``BaseHook.get_connection(conn_id)`` looks the connection up in the
    environment, the secrets files, then the database (as ``Connection.get``).
    """

    @classmethod
    def get_connection(cls, conn_id: str) -> Connection:
        return Connection.get(conn_id)

    def get_conn(self) -> object:
        """The client of the external system; each hook defines it."""
        raise NotImplementedError
