"""Task log files are opened only inside the log folder, never through a symlink, never whole."""

from __future__ import annotations

import os
import threading
import tracemalloc

import pytest

from flowsched.task_logs.files import (
    LogRefused,
    checked_path,
    iter_chunks,
    open_for_append,
    open_log,
    read_local_tail,
    read_tail,
    relative_log_path,
)
from tests.conftest import Home

RELATIVE = relative_log_path("etl", "manual__1", "load", 1)


def _write(home: Home, relative: str, data: bytes) -> None:
    path = home.logs / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


@pytest.mark.parametrize(
    "relative", ["../secret.log", "/etc/passwd", "dag_id=x/../../secret.log", ".", "a\0b"]
)
def test_paths_outside_the_log_folder_are_refused(sqlite_home: Home, relative: str) -> None:
    with pytest.raises(LogRefused):
        checked_path(relative)
    with pytest.raises(LogRefused):
        open_log(relative)
    with pytest.raises(LogRefused):
        open_for_append(relative)


def test_symlinks_are_never_followed(sqlite_home: Home) -> None:
    """A log linked to /dev/full (observed: a gunicorn worker grew to 23 GB), or to another file."""
    _write(sqlite_home, RELATIVE, b"the real log\n")
    outside = sqlite_home.root / "secret.txt"
    outside.write_text("not a log")
    links = {
        "dev-full.log": ("/dev/full", "outside the log folder"),
        "out.log": (str(outside), "outside the log folder"),
        # inside the folder, but a link all the same
        "in.log": (str(sqlite_home.logs / RELATIVE), "is a symlink; logs are never followed"),
    }
    for name, (target, reason) in links.items():
        (sqlite_home.logs / name).symlink_to(target)
        with pytest.raises(LogRefused, match=reason):
            open_log(name)
        with pytest.raises(LogRefused, match=reason):
            open_for_append(name)
    assert outside.read_text() == "not a log"
    # A folder of the path that links out is refused too.
    (sqlite_home.logs / "dag_id=linked").symlink_to(sqlite_home.root)
    with pytest.raises(LogRefused, match="outside the log folder"):
        open_for_append("dag_id=linked/secret.txt")


def test_only_regular_files_are_opened(sqlite_home: Home) -> None:
    os.mkfifo(sqlite_home.logs / "fifo.log")
    (sqlite_home.logs / "folder.log").mkdir()
    outcome: dict[str, BaseException] = {}

    def open_fifo() -> None:
        try:
            open_log("fifo.log")
        except BaseException as exc:
            outcome["read"] = exc
        try:
            open_for_append("fifo.log")
        except BaseException as exc:
            outcome["write"] = exc

    # A FIFO nobody writes would block a plain open() forever: it must not.
    thread = threading.Thread(target=open_fifo, daemon=True)
    thread.start()
    thread.join(10)
    assert not thread.is_alive(), "opening a FIFO log blocked"
    for side in ("read", "write"):
        assert isinstance(outcome[side], LogRefused), outcome
        assert "not a regular file" in str(outcome[side])
    with pytest.raises(LogRefused, match="not a regular file"):
        open_log("folder.log")
    with pytest.raises(FileNotFoundError):
        open_log(relative_log_path("etl", "manual__1", "load", 9))


def test_append_creates_the_folders_and_appends(sqlite_home: Home) -> None:
    for text in (b"one\n", b"two\n"):
        fd = open_for_append(RELATIVE)
        os.write(fd, text)
        os.close(fd)
    assert (sqlite_home.logs / RELATIVE).read_bytes() == b"one\ntwo\n"


def test_long_ids_fit_in_file_names_and_stay_distinct() -> None:
    long_a, long_b = "a" * 250, "a" * 249 + "b"
    path_a = relative_log_path(long_a, long_a, long_a, 1)
    path_b = relative_log_path(long_a, long_b, long_a, 1)
    assert path_a != path_b
    for part in path_a.split("/"):
        assert len(part.encode()) <= 255
    assert relative_log_path("d", "r", "t", 2) == "dag_id=d/run_id=r/task_id=t/attempt=2.log"


def test_the_tail_is_bounded_and_starts_at_a_line(sqlite_home: Home) -> None:
    lines = b"".join(b"line %06d\n" % n for n in range(200_000))  # 2.2 MB
    _write(sqlite_home, RELATIVE, lines)
    tail = read_local_tail(RELATIVE, 1 << 20)
    assert tail.truncated and tail.size == len(lines)
    assert len(tail.data) <= 1 << 20 and tail.data.startswith(b"line ")
    assert lines.endswith(tail.data) and tail.start == len(lines) - len(tail.data)
    assert tail.text().endswith("line 199999\n")
    whole = read_local_tail(RELATIVE, len(lines))
    assert not whole.truncated and whole.data == lines
    # One long line is kept as it is rather than emptied.
    _write(sqlite_home, RELATIVE, b"x" * 5000 + b"\n")
    with open_log(RELATIVE) as handle:
        assert read_tail(handle, 100).data == b"x" * 99 + b"\n"


def test_chunks_stream_a_large_log_in_bounded_memory(sqlite_home: Home) -> None:
    size = 32 * 1024 * 1024
    path = sqlite_home.logs / RELATIVE
    path.parent.mkdir(parents=True)
    with path.open("wb") as sink:
        for n in range(size // 65536):
            sink.write(bytes([65 + n % 26]) * 65536)
    tracemalloc.start()
    try:
        total = 0
        with open_log(RELATIVE) as handle:
            for chunk in iter_chunks(handle):
                total += len(chunk)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert total == size
    assert peak < 2 * 1024 * 1024, f"streaming {size} bytes peaked at {peak} bytes"
