"""Processes a test module leaves behind, found through a cgroup per module.

The pytest process moves into a cgroup of its own (cgroup v2) for each test
module, so everything the module starts, exec'd or only forked, in a new
session or orphaned, is born in that cgroup and stays there. Once the module's
fixtures are torn down, a process still in it was left behind: the module gets
a warning naming its pid and command line (pytest's warnings summary). What a
session-scoped fixture starts goes to a cgroup of its own, not the module's.

It reports and does not fail yet: tests that restart a session's servers (an
outage drill) hand them to a module's cgroup, and each such case must first be
told apart. Without root or a writable cgroup v2 hierarchy it does nothing.
"""

from __future__ import annotations

import contextlib
import os
import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

GRACE_SECONDS = 15.0


def _unified_root() -> Path | None:
    """cgroup v2: the whole tree, or its unified part beside v1 (as run-ci finds it)."""
    for root in (Path("/sys/fs/cgroup"), Path("/sys/fs/cgroup/unified")):
        if (root / "cgroup.controllers").exists():
            return root
    return None


def _procs(cgroup: Path) -> list[int]:
    try:
        return [int(pid) for pid in (cgroup / "cgroup.procs").read_text().split()]
    except OSError:
        return []


def _put(pid: int, cgroup: Path) -> None:
    (cgroup / "cgroup.procs").write_text(str(pid))


def _command_line(pid: int) -> str:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return "?"
    return raw.replace(b"\0", b" ").decode(errors="replace").strip()[:200]


class Cgroups:
    """This pytest process's cgroups: one per module, one for session fixtures."""

    def __init__(self, root: Path) -> None:
        own = next(
            line.split(":", 2)[2]
            for line in Path("/proc/self/cgroup").read_text().splitlines()
            if line.startswith("0::")
        )
        self.home = root / own.lstrip("/")
        self.base = root / "flowsched-tests" / str(os.getpid())
        self.current: Path | None = None

    def move_to(self, cgroup: Path) -> None:
        cgroup.mkdir(parents=True, exist_ok=True)
        _put(os.getpid(), cgroup)

    def back_home(self) -> None:
        _put(os.getpid(), self.home)

    def left_in(self, cgroup: Path) -> list[int]:
        """The processes still in ``cgroup`` after the grace time (none: it is removed)."""
        deadline = time.monotonic() + GRACE_SECONDS
        while (left := _procs(cgroup)) and time.monotonic() < deadline:
            time.sleep(0.2)
        if not left:
            with contextlib.suppress(OSError):
                cgroup.rmdir()
        return left

    def release_all(self) -> None:
        """At the end: survivors go back to pytest's own cgroup, the folders go."""
        for cgroup in self.base.glob("*"):
            for pid in _procs(cgroup):
                with contextlib.suppress(OSError):
                    _put(pid, self.home)
            with contextlib.suppress(OSError):
                cgroup.rmdir()
        for folder in (self.base, self.base.parent):
            with contextlib.suppress(OSError):
                folder.rmdir()


_cgroups: Cgroups | None = None


def _tracker() -> Cgroups | None:
    global _cgroups
    if _cgroups is None and os.geteuid() == 0 and (root := _unified_root()) is not None:
        with contextlib.suppress(OSError, StopIteration):
            _cgroups = Cgroups(root)
    return _cgroups


@pytest.hookimpl(hookwrapper=True)
def pytest_fixture_setup(fixturedef: pytest.FixtureDef, request: pytest.FixtureRequest):
    """A session fixture's processes live as long as the session: not the module's."""
    cgroups = _tracker()
    if cgroups is None or fixturedef.scope != "session" or cgroups.current is None:
        yield
        return
    try:
        cgroups.move_to(cgroups.base / "session")
    except OSError:
        yield
        return
    try:
        yield
    finally:
        with contextlib.suppress(OSError):
            cgroups.move_to(cgroups.current)


@pytest.fixture(scope="module", autouse=True)
def _no_process_left_behind(request: pytest.FixtureRequest) -> Iterator[None]:
    cgroups = _tracker()
    if cgroups is None:
        yield
        return
    cgroup = cgroups.base / re.sub(r"[^\w.-]", "_", request.module.__name__)
    try:
        cgroups.move_to(cgroup)
    except OSError:
        yield
        return
    cgroups.current = cgroup
    yield
    cgroups.current = None
    with contextlib.suppress(OSError):
        cgroups.back_home()
    left = cgroups.left_in(cgroup)
    if left:
        named = "; ".join(f"{pid} {_command_line(pid)}" for pid in left)
        request.node.warn(pytest.PytestWarning(f"processes left behind after the module: {named}"))


def pytest_sessionfinish() -> None:
    if _cgroups is not None:
        with contextlib.suppress(OSError):
            _cgroups.back_home()
        _cgroups.release_all()
