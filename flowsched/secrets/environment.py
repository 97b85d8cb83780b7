"""``FLOWSCHED_CONN_<ID>`` and ``FLOWSCHED_VAR_<KEY>``: Airflow's env backend, renamed."""

from __future__ import annotations

import os

from flowsched.connection import Connection
from flowsched.secrets.base import SecretsBackend, parse_connection

CONN_ENV_PREFIX = "FLOWSCHED_CONN_"
VAR_ENV_PREFIX = "FLOWSCHED_VAR_"


class EnvironmentVariablesBackend(SecretsBackend):
    name = "environment"

    def get_connection(self, conn_id: str) -> Connection | None:
        name = CONN_ENV_PREFIX + conn_id.upper()
        value = os.environ.get(name)
        if value is None:
            return None
        return parse_connection(conn_id, value, f"environment variable {name}")

    def get_variable(self, key: str) -> str | None:
        return os.environ.get(VAR_ENV_PREFIX + key.upper())
