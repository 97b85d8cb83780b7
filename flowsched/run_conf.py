"""The size limit of a run's ``conf``: one check for every way a run is triggered.

A conf is stored with the run, rendered into templates and shipped to every
try, so an unbounded one (say a whole file pasted into the trigger form) would
bloat the database and every task message. ``[core] max_run_conf_size`` caps
its compact JSON; the API, the pages and the CLI all trigger through
:func:`flowsched.operations.trigger_dag`, which calls :func:`check_conf_size`.
"""

from __future__ import annotations

import json
from typing import Any

from flowsched.config import get_config
from flowsched.exceptions import FlowschedError


def conf_size(conf: Any) -> int:
    """Bytes of the conf as compact UTF-8 JSON, as it is stored."""
    return len(json.dumps(conf, separators=(",", ":"), ensure_ascii=False).encode())


def check_conf_size(conf: dict[str, Any] | None) -> None:
    if conf is None:
        return
    limit = get_config().core.max_run_conf_size
    size = conf_size(conf)
    if size > limit:
        raise FlowschedError(
            f"run conf is {size} bytes as JSON, more than the {limit} allowed "
            "([core] max_run_conf_size): pass a reference (a path, a key) instead of the data"
        )
