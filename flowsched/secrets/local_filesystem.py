"""The file backend: a folder of YAML or JSON files holding connections and variables.

Each ``*.yaml``, ``*.yml`` or ``*.json`` file in ``secrets.files_folder`` (not
in sub-folders; hidden files skipped) is a mapping with ``connections`` and/or
``variables``::

    connections:
      warehouse: mysql://etl:s3cret@db.example.com:3306/dw     # a URI...
      api:                                                      # ...or the fields
        conn_type: http
        host: api.example.com
        password: t0ken
        extra: {"verify": false}
    variables:
      environment: production
      thresholds: {"rows": 1000}      # not a string: stored as its JSON text

Ansible renders such a file from the vault (``flowsched_secrets_connections``
and ``flowsched_secrets_variables``), readable by the flowsched group only.
An id defined in two files is an error naming both, not a silent choice.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from flowsched.connection import Connection
from flowsched.exceptions import FlowschedError
from flowsched.secrets.base import SecretsBackend, parse_connection

SUFFIXES = (".yaml", ".yml", ".json")
SECTIONS = ("connections", "variables")


class SecretsFileError(FlowschedError):
    """A secrets file cannot be read or is malformed; the message names the file."""


def _load(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise SecretsFileError(f"secrets file {path}: cannot read it: {exc.strerror}") from None
    try:
        data = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as exc:
        raise SecretsFileError(f"secrets file {path}: not valid {path.suffix[1:]}: {exc}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise SecretsFileError(f"secrets file {path}: expected a mapping with {SECTIONS}")
    unknown = set(data) - set(SECTIONS)
    if unknown:
        raise SecretsFileError(
            f"secrets file {path}: unknown top-level key(s) {', '.join(sorted(map(str, unknown)))}"
            f" (expected connections and/or variables)"
        )
    for section in SECTIONS:
        if not isinstance(data.get(section) or {}, dict):
            raise SecretsFileError(f"secrets file {path}: '{section}' must be a mapping")
    return data


def _variable_text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


class LocalFilesystemBackend(SecretsBackend):
    name = "files"

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)

    def files(self) -> list[Path]:
        if not self.folder.is_dir():
            raise SecretsFileError(
                f"secrets.files_folder {self.folder} is not a folder (or is not readable)"
            )
        return sorted(
            path
            for path in self.folder.iterdir()
            if path.suffix in SUFFIXES and not path.name.startswith(".") and path.is_file()
        )

    def _section(self, section: str) -> dict[str, tuple[Any, Path]]:
        found: dict[str, tuple[Any, Path]] = {}
        for path in self.files():
            for key, value in (_load(path).get(section) or {}).items():
                key = str(key)
                if key in found:
                    raise SecretsFileError(
                        f"{section[:-1]} '{key}' is defined in both {found[key][1]} and {path}"
                    )
                found[key] = (value, path)
        return found

    def connections(self) -> dict[str, Connection]:
        return {
            conn_id: parse_connection(conn_id, value, f"secrets file {path}")
            for conn_id, (value, path) in self._section("connections").items()
        }

    def variables(self) -> dict[str, str]:
        return {
            key: _variable_text(value) for key, (value, _) in self._section("variables").items()
        }

    def get_connection(self, conn_id: str) -> Connection | None:
        entry = self._section("connections").get(conn_id)
        if entry is None:
            return None
        return parse_connection(conn_id, entry[0], f"secrets file {entry[1]}")

    def get_variable(self, key: str) -> str | None:
        entry = self._section("variables").get(key)
        return None if entry is None else _variable_text(entry[0])
