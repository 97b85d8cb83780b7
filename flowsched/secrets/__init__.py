"""Where connections and variables come from, in Airflow's order.

1. the environment: ``FLOWSCHED_CONN_<CONN_ID>`` (a URI, or JSON starting
   with ``{``) and ``FLOWSCHED_VAR_<KEY>``, the names upper-cased, as
   Airflow's ``AIRFLOW_CONN_`` / ``AIRFLOW_VAR_``;
2. the file backend: the YAML/JSON files of ``secrets.files_folder``;
3. the metadata database (``flowsched connections add``, the web pages, the API).

The first backend that knows the id wins. Every value found is registered with
:mod:`flowsched.secrets_masker`, so it is masked if a task prints it.
"""

from __future__ import annotations

from flowsched.connection import Connection, ConnectionNotFound
from flowsched.secrets.base import SecretsBackend
from flowsched.secrets.environment import EnvironmentVariablesBackend
from flowsched.secrets.local_filesystem import LocalFilesystemBackend
from flowsched.secrets.metastore import MetastoreBackend
from flowsched.secrets_masker import mask_connection, mask_secret


def backends() -> list[SecretsBackend]:
    """The backends in lookup order; the file backend only when a folder is configured."""
    from flowsched.config import get_config

    found: list[SecretsBackend] = [EnvironmentVariablesBackend()]
    folder = get_config().secrets.files_folder
    if folder:
        found.append(LocalFilesystemBackend(folder))
    found.append(MetastoreBackend())
    return found


def find_connection(conn_id: str) -> tuple[Connection, str] | None:
    """The connection and the name of the backend that defined it, or None."""
    for backend in backends():
        conn = backend.get_connection(conn_id)
        if conn is not None:
            return conn, backend.name
    return None


def get_connection(conn_id: str) -> Connection:
    found = find_connection(conn_id)
    if found is None:
        raise ConnectionNotFound(
            f"The conn_id `{conn_id}` isn't defined: not in FLOWSCHED_CONN_"
            f"{conn_id.upper()}, the secrets files or the metadata database"
        )
    conn = found[0]
    mask_connection(conn)
    return conn


def find_variable(key: str) -> tuple[str, str] | None:
    """The value and the name of the backend that defined it, or None."""
    for backend in backends():
        value = backend.get_variable(key)
        if value is not None:
            return value, backend.name
    return None


def get_variable(key: str) -> str | None:
    found = find_variable(key)
    if found is None:
        return None
    mask_secret(found[0], name=key)
    return found[0]
