"""Writing a file that holds secrets: private from its first byte.

``write_text`` then ``chmod`` leaves a moment where the file has the umask's
mode (often 0644) with the secret already in it; another local user who opens
it then keeps the open file. Here the file is created by ``os.open`` with its
final mode, and an existing file of another mode is refused rather than
silently reused.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from flowsched.exceptions import FlowschedError

SECRET_FILE_MODE = 0o600


def write_secret_file(path: Path, text: str, mode: int = SECRET_FILE_MODE) -> None:
    """Create ``path`` with ``mode`` (or replace a file of that mode) and write ``text``."""
    if path.exists() and stat.S_IMODE(path.stat().st_mode) & ~mode:
        raise FlowschedError(
            f"{path} exists with mode {stat.S_IMODE(path.stat().st_mode):o}, wider than "
            f"{mode:o}: it may have been read; remove it and start again"
        )
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_NOFOLLOW", 0)
    fd = os.open(path, flags, mode)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text)
