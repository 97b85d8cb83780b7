"""FileSensor: wait for a file or folder (Airflow's airflow.sensors.filesystem)."""

from __future__ import annotations

import glob
import os
from typing import Any

from flowsched.exceptions import FlowschedError
from flowsched.sensors.base import BaseSensorOperator


def base_path(fs_conn_id: str) -> str:
    """The ``path`` in the connection's extra (Airflow's fs connection); none for fs_default."""
    from flowsched.hooks.base import BaseHook

    try:
        connection = BaseHook.get_connection(fs_conn_id)
    except FlowschedError:
        if fs_conn_id == "fs_default":
            return ""
        raise
    return str(connection.extra_dejson.get("path", ""))


class FileSensor(BaseSensorOperator):
    """Done when ``filepath`` (a glob; ``**`` with ``recursive``) matches a file, or a
    folder with a file somewhere in it. Relative paths start at the connection's path."""

    template_fields = ("filepath",)

    def __init__(
        self,
        task_id: str,
        *,
        filepath: str,
        fs_conn_id: str = "fs_default",
        recursive: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(task_id, **kwargs)
        self.filepath = filepath
        self.fs_conn_id = fs_conn_id
        self.recursive = recursive

    def poke(self, context: dict[str, Any]) -> bool:
        full_path = os.path.join(base_path(self.fs_conn_id), self.filepath)
        self.log_poke(full_path)
        for path in glob.glob(full_path, recursive=self.recursive):
            if os.path.isfile(path):
                return True
            for _, _, files in os.walk(path):
                if files:
                    return True
        return False

    def log_poke(self, path: str) -> None:
        import logging

        logging.getLogger("flowsched.task").info("poking for file %s", path)
