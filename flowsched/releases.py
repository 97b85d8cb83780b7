"""Kept releases of the DAG and plugin folders, so a sync never fails a queued try.

A deployment (``roles/dag_sync``) ships each folder as a release,
``<root>/releases/<UTC time>-<id>``, points ``<root>/current`` at it in one
atomic rename and keeps the last few releases; ``core.dags_folder`` and
``core.plugins_folder`` are the ``current`` links. A try carries the sha256
of its DAG file (and of its plugin files) from the moment it was queued, so
right after a sync a worker would find other bytes under ``current`` than
the try was queued with. Rather than fail the try and spend a retry, the
worker runs the kept release whose files have exactly those fingerprints;
it refuses the try only when no kept release matches.

A folder has earlier releases only when it is a symlink into a folder named
``releases``; any other folder is its own only release.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from flowsched.exceptions import DagFileMismatch

RELEASES = "releases"
PARTIAL = ".partial"  # a release still being unpacked: never read


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def releases_of(folder: Path) -> list[Path]:
    """The folder's current release first, then its other kept releases, newest first.

    Release names start with their UTC time, so name order is age order.
    """
    current = Path(folder).resolve()
    if not Path(folder).is_symlink() or current.parent.name != RELEASES:
        return [current]
    try:
        siblings = [
            path
            for path in current.parent.iterdir()
            if path != current and not path.name.endswith(PARTIAL) and path.is_dir()
        ]
    except OSError:
        siblings = []
    return [current, *sorted(siblings, key=lambda path: path.name, reverse=True)]


def _sha_or_none(path: Path) -> str | None:
    try:
        return _sha256(path)
    except (FileNotFoundError, NotADirectoryError, PermissionError):
        return None  # pruned or unreadable meanwhile: not a match


def dag_file_for(folder: Path, relative: str, fingerprint: str) -> Path:
    """The DAG file ``relative`` whose sha256 is ``fingerprint``, in the newest kept release.

    Raises what the current release alone would: :class:`FileNotFoundError` if
    the file is in none of them and absent from ``current``,
    :class:`DagFileMismatch` (with the current copy's sha256) if no kept copy
    has the fingerprint.
    """
    releases = releases_of(folder)
    for release in releases:
        path = release / relative
        if _sha_or_none(path) == fingerprint:
            return path
    current = releases[0] / relative
    raise DagFileMismatch(_sha256(current))  # FileNotFoundError when it is gone


def plugins_release_for(
    folder: Path, expected: dict[str, str]
) -> tuple[Path, list[tuple[str, str, str | None]]]:
    """The newest kept plugins release holding every expected file with its sha256.

    Returns (release, []) on a match, else (current release, the current
    release's mismatches as (file, expected sha256, local sha256 or None)).
    """
    releases = releases_of(folder)
    mismatches: list[tuple[str, str, str | None]] = []
    for index, release in enumerate(releases):
        differing = [
            (relative, sha, local)
            for relative, sha in sorted(expected.items())
            if (local := _sha_or_none(release / relative)) != sha
        ]
        if not differing:
            return release, []
        if index == 0:
            mismatches = differing
    return releases[0], mismatches
