"""Task log files: where a try's log lives, and the only code that opens one.

Every log path is built from ids, resolved, and refused unless it lies inside
``logging.base_log_folder``. Files are opened with ``O_NOFOLLOW`` and
``O_NONBLOCK`` and must be regular files, so a log that is a symlink (to
``/dev/full``, to a secret), a FIFO or a directory is refused rather than
read or written through; after opening, the path the kernel actually opened
is checked again against the folder, so a directory swapped for a symlink
between the check and the open is caught too.

Reads are bounded: a page gets the tail (:func:`read_tail`), a download or a
log server answer gets chunks (:func:`iter_chunks`); nothing here reads a
whole log into memory.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from flowsched.config import get_config
from flowsched.exceptions import FlowschedError

NAME_MAX = 255  # bytes in one path component (ext4, xfs, tmpfs...)
CHUNK_SIZE = 64 * 1024
_LINE_PEEK = 64 * 1024  # how far into a tail to look for the first line break

_COMMON = os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY
_READ = os.O_RDONLY | _COMMON
_APPEND = os.O_WRONLY | os.O_CREAT | os.O_APPEND | _COMMON


class LogRefused(FlowschedError):
    """A log path that leaves the log folder, is a symlink, or is not a regular file."""


def _component(key: str, value: str) -> str:
    """``key=value``, shortened with a hash of the value when too long for one file name.

    Ids are at most 250 characters, and ``run_id=`` plus 250 is over the 255
    bytes a file name may have; '#' cannot occur in an id, so a shortened
    name never equals a whole one.
    """
    name = f"{key}={value}"
    if len(name.encode()) <= NAME_MAX:
        return name
    digest = hashlib.sha256(value.encode()).hexdigest()[:16]
    keep = NAME_MAX - len(key) - 2 - len(digest)
    return f"{key}={value.encode()[:keep].decode(errors='ignore')}#{digest}"


def relative_log_path(
    dag_id: str, run_id: str, task_id: str, try_number: int, map_index: int = -1
) -> str:
    """Where a try's log lives, relative to the log folder (Airflow's layout: a mapped
    task's copies each have a ``map_index=N`` folder)."""
    parts = [
        _component("dag_id", dag_id),
        _component("run_id", run_id),
        _component("task_id", task_id),
    ]
    if int(map_index) >= 0:
        parts.append(f"map_index={int(map_index)}")
    return "/".join((*parts, f"attempt={int(try_number)}.log"))


def base_folder() -> Path:
    """The configured log folder, resolved (it may itself be a symlink an admin made)."""
    return Path(os.path.realpath(get_config().logging.base_log_folder))


def _inside(path: Path, base: Path) -> bool:
    return path != base and path.is_relative_to(base)


def checked_path(relative: str, base: Path | None = None) -> Path:
    """``base / relative``, or :class:`LogRefused` if it resolves outside ``base``."""
    base = base or base_folder()
    if "\0" in relative:
        raise LogRefused(f"log path {relative!r} holds a NUL byte")
    candidate = Path(os.path.normpath(base / relative))
    if not _inside(candidate, base) or not _inside(Path(os.path.realpath(candidate)), base):
        raise LogRefused(f"log path {relative!r} is outside the log folder {base}")
    return candidate


def log_path(dag_id: str, run_id: str, task_id: str, try_number: int, map_index: int = -1) -> Path:
    """The checked absolute path of a try's log."""
    return checked_path(relative_log_path(dag_id, run_id, task_id, try_number, map_index))


def _opened_path(fd: int) -> Path | None:
    """The path the kernel opened for ``fd`` (Linux /proc), or None where unknown."""
    try:
        target = os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        return None
    return Path(target.removesuffix(" (deleted)"))


def _open(path: Path, flags: int, base: Path) -> int:
    try:
        fd = os.open(path, flags, 0o644)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise LogRefused(f"log {path} is a symlink; logs are never followed") from None
        if exc.errno == errno.ENXIO:  # a FIFO nobody reads
            raise LogRefused(f"log {path} is not a regular file") from None
        raise
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise LogRefused(f"log {path} is not a regular file")
        opened = _opened_path(fd)
        if opened is not None and not _inside(opened, base):
            raise LogRefused(f"log {path} opened {opened}, outside the log folder {base}")
        os.set_blocking(fd, True)
    except BaseException:
        os.close(fd)
        raise
    return fd


def open_for_append(relative: str) -> int:
    """Create (or append to) a log below the log folder; returns the file descriptor."""
    base = base_folder()
    path = checked_path(relative, base)
    path.parent.mkdir(parents=True, exist_ok=True)
    checked_path(relative, base)  # the folders just made (or found) are still inside
    return _open(path, _APPEND, base)


def open_log(relative: str, base: Path | None = None) -> BinaryIO:
    """A log opened for reading; FileNotFoundError if there is none."""
    base = base or base_folder()
    try:
        fd = _open(checked_path(relative, base), _READ, base)
    except NotADirectoryError as exc:  # a file where a folder of the path should be
        raise FileNotFoundError(exc.errno, exc.strerror, exc.filename) from None
    return os.fdopen(fd, "rb", buffering=0)


def file_size(handle: BinaryIO) -> int:
    return os.fstat(handle.fileno()).st_size


def tail_start(handle: BinaryIO, limit: int) -> tuple[int, int]:
    """(offset, size): where the last ``limit`` bytes start, moved to the next line.

    The offset moves past the first line break within the first 64 KiB of the
    tail, so a truncated log does not begin mid-line (a tail that is one long
    line is kept as it is).
    """
    size = file_size(handle)
    start = max(0, size - max(0, limit))
    if 0 < start < size:
        handle.seek(start - 1)
        peek = handle.read(min(_LINE_PEEK, size - start) + 1)
        newline = peek.find(b"\n")
        if newline >= 0 and start + newline < size:
            start += newline
    return start, size


def read_range(handle: BinaryIO, offset: int, length: int) -> bytes:
    """At most ``length`` bytes from ``offset`` (fewer at the end of the file)."""
    parts: list[bytes] = []
    for chunk in iter_chunks(handle, offset, offset + max(0, length)):
        parts.append(chunk)
    return b"".join(parts)


def iter_chunks(
    handle: BinaryIO, offset: int = 0, end: int | None = None, chunk_size: int = CHUNK_SIZE
) -> Iterator[bytes]:
    """The bytes [offset, end) in chunks; ``end`` defaults to the size now.

    A log still being written streams what it held when asked, so a download
    of a busy log ends.
    """
    end = file_size(handle) if end is None else end
    position = max(0, offset)
    handle.seek(position)
    while position < end:
        data = handle.read(min(chunk_size, end - position))
        if not data:
            return  # the file was truncated meanwhile
        position += len(data)
        yield data


@dataclass(frozen=True)
class LogTail:
    """The end of a log: ``data`` starts at byte ``start`` of a file of ``size`` bytes."""

    data: bytes
    start: int
    size: int

    @property
    def truncated(self) -> bool:
        return self.start > 0

    def text(self) -> str:
        return self.data.decode("utf-8", errors="replace")


def read_tail(handle: BinaryIO, limit: int) -> LogTail:
    start, size = tail_start(handle, limit)
    return LogTail(read_range(handle, start, size - start), start, size)


def read_local_tail(relative: str, limit: int) -> LogTail:
    """The tail of a log in this machine's log folder; FileNotFoundError if absent."""
    with contextlib.closing(open_log(relative)) as handle:
        return read_tail(handle, limit)
