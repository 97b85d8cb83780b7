"""How every ``flowsched`` command prints: its tables and its log lines.

In a module of its own so that the command modules (core, Celery, web,
secrets) and ``standalone`` share one format without importing the command
tree, which imports them.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

import click

from flowsched.config import get_config


def setup_logging() -> None:
    """Log to stderr at ``[logging] level``, so stdout stays the command's output."""
    level = get_config().logging.level
    logging.basicConfig(
        level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr
    )


def table(rows: list[list[Any]], headers: list[str]) -> None:
    """Print rows as aligned columns under a header line; ``None`` shows as ``-``."""
    cells = [headers, *[[("-" if c is None else str(c)) for c in row] for row in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    for index, row in enumerate(cells):
        click.echo("  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)).rstrip())
        if index == 0:
            click.echo("  ".join("-" * width for width in widths))
