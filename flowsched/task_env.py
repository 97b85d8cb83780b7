"""What a task may see of the process environment: no cluster secrets.

A try runs user code, and BashOperator hands the whole environment to its
shell; anything a task prints ends up in a log every Viewer can read. The
worker's own ``FLOWSCHED__*`` settings that the config table marks secret (the
database URL with its password, the broker URL, the secret key, Flower's
password) are therefore removed from the try process once it has loaded its
config and opened its database connections, before the task executes.
"""

from __future__ import annotations

import os
from collections.abc import MutableMapping

from flowsched.config import ENV_PREFIX, OPTIONS

# Also the `_CMD`/`_SECRET` spellings Airflow reads, should a deployment set them.
_SUFFIXES = ("", "_CMD", "_SECRET")


def secret_variable_names() -> frozenset[str]:
    """``FLOWSCHED__SECTION__KEY`` names of every secret option."""
    return frozenset(
        f"{ENV_PREFIX}{section.upper()}__{key.upper()}{suffix}"
        for section, options in OPTIONS.items()
        for key, option in options.items()
        if option.secret
        for suffix in _SUFFIXES
    )


def scrub_task_environment(environ: MutableMapping[str, str] | None = None) -> list[str]:
    """Remove the secret ``FLOWSCHED__*`` variables; return the names removed."""
    environ = os.environ if environ is None else environ
    secret = secret_variable_names()
    removed = sorted(name for name in environ if name.upper() in secret)
    for name in removed:
        del environ[name]
    return removed
