"""Datasets: data-aware scheduling, as Airflow 2's ``airflow.datasets``.

A task lists the datasets it updates in ``outlets``; a DAG with
``schedule=[Dataset(...), ...]`` gets a run once every one of its datasets has
been updated since its last such run. A Dataset is a URI and an optional JSON
``extra``; flowsched never reads or writes the data behind it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from flowsched.exceptions import DagDefinitionError

MAX_URI_LENGTH = 3000


@dataclass(frozen=True)
class Dataset:
    uri: str
    extra: dict[str, Any] | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        if not isinstance(self.uri, str) or not self.uri:
            raise DagDefinitionError(f"Dataset URI must be a non-empty string, got {self.uri!r}")
        if len(self.uri) > MAX_URI_LENGTH:
            raise DagDefinitionError(
                f"Dataset URI is {len(self.uri)} characters; the limit is {MAX_URI_LENGTH}"
            )
        if not self.uri.isascii() or any(c.isspace() for c in self.uri):
            raise DagDefinitionError(
                f"Dataset URI {self.uri!r} must consist of ASCII characters without spaces"
            )
        if self.uri.lower().startswith("airflow://"):
            raise DagDefinitionError(f"Dataset URI {self.uri!r}: the 'airflow' scheme is reserved")
        if self.extra is not None:
            if not isinstance(self.extra, dict):
                raise DagDefinitionError(f"Dataset {self.uri!r}: extra must be a dict")
            try:
                json.dumps(self.extra)
            except (TypeError, ValueError) as exc:
                raise DagDefinitionError(
                    f"Dataset {self.uri!r}: extra must be JSON-serializable ({exc})"
                ) from None

    def __hash__(self) -> int:
        return hash(self.uri)

    def to_dict(self) -> dict[str, Any]:
        return {"uri": self.uri, "extra": self.extra or {}}


def outlet_datasets(outlets: list[Any]) -> list[Dataset]:
    """The Datasets among a task's outlets (other outlet kinds are accepted, no effect)."""
    return [outlet for outlet in outlets if isinstance(outlet, Dataset)]
