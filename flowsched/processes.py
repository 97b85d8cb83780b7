"""The processes flowsched starts: none outlives its parent, none leaves a tree behind.

Three rules, one helper each, used wherever flowsched forks or spawns:

* **Safe command line** (:func:`flowsched_command`): every ``python -m
  flowsched …`` child runs with ``-P``, so a folder named ``flowsched`` in the
  working directory (the data folder ``~/flowsched`` when started from the
  home directory) can never shadow the installed package.
* **Parent-death signal** (:func:`set_parent_death_signal`, and
  :func:`spawn_flowsched` which asks the child to set it on itself): the kernel
  signals the child when its parent dies, even by ``kill -9``. Linux ties it to
  the *thread* that forked the child, so the spawning thread must live as long
  as the child does.
* **Groups and trees are killed, not just processes** (:func:`kill_group`,
  :func:`end_tree`): a process that forked or daemonised is still ours; every
  wait for them has a deadline and returns who survived it.

Linux only (``prctl`` through ctypes, ``/proc``), like the rest of flowsched.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

PR_SET_PDEATHSIG = 1
PR_SET_CHILD_SUBREAPER = 36

# Set by spawn_flowsched in the child's environment ("<parent pid>:<signal>"),
# read and removed by ``python -m flowsched`` at start (flowsched/__main__.py).
PARENT_ENV = "FLOWSCHED_DIE_WITH_PARENT"

DEFAULT_DEADLINE = 10.0

_libc: Any = None


def _prctl(option: int, value: int) -> None:
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(None, use_errno=True)
    if _libc.prctl(option, ctypes.c_ulong(value), 0, 0, 0) != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"prctl({option}, {value}): {os.strerror(errno)}")


def set_parent_death_signal(signum: int, parent: int | None = None) -> None:
    """Have the kernel send ``signum`` to this process when its parent dies.

    With ``parent`` (the pid this process was started by), a parent that died
    before the request was made is caught too: the signal is delivered now.
    """
    _prctl(PR_SET_PDEATHSIG, int(signum))
    if parent is not None and os.getppid() != parent:
        os.kill(os.getpid(), signum)


def adopt_parent_death_signal() -> None:
    """In a child started by :func:`spawn_flowsched`: die with the parent that asked so.

    The variable is removed at once so that nothing this process starts in turn
    (a task's shell, a CLI call from a task) inherits the request.
    """
    request = os.environ.pop(PARENT_ENV, None)
    if not request:
        return
    parent, _, signum = request.partition(":")
    with contextlib.suppress(ValueError):
        set_parent_death_signal(int(signum or signal.SIGKILL), int(parent))


def become_subreaper(enabled: bool = True) -> None:
    """Orphans of this process's descendants are re-parented here instead of to init,
    so :func:`end_tree` can still find (and kill) what a dead child left running.
    ``enabled=False`` gives them back to init (a test process that ran a try in
    place must not collect the zombies of every later test)."""
    _prctl(PR_SET_CHILD_SUBREAPER, 1 if enabled else 0)


def python_command(*args: str) -> list[str]:
    """This interpreter, immune to the working directory (``-P``), with ``args``."""
    return [sys.executable, "-P", *args]


def flowsched_command(*args: str) -> list[str]:
    """``python -P -m flowsched args…``: how flowsched starts itself, from any directory."""
    return python_command("-m", "flowsched", *args)


def spawn_flowsched(
    args: Sequence[str],
    *,
    death_signal: int = signal.SIGKILL,
    env: Mapping[str, str] | None = None,
    **popen: Any,
) -> subprocess.Popen[bytes]:
    """Start ``flowsched args…`` as a child that dies with this process (``death_signal``).

    The child sets its own parent-death signal at start (no ``preexec_fn``,
    which is unsafe in a threaded parent), and dies at once if this process is
    already gone by then. Call it from a thread that outlives the child.
    """
    child_env = dict(os.environ if env is None else env)
    child_env[PARENT_ENV] = f"{os.getpid()}:{int(death_signal)}"
    return subprocess.Popen(flowsched_command(*args), env=child_env, **popen)


# -- the process table ------------------------------------------------------
@dataclass(frozen=True)
class ProcInfo:
    pid: int
    ppid: int
    pgid: int
    state: str

    @property
    def alive(self) -> bool:
        """Running code, as opposed to a zombie waiting to be reaped."""
        return self.state not in ("Z", "X")


def pid_alive(pid: int) -> bool:
    """Whether a process with this pid exists (it may belong to another user)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def process_table() -> dict[int, ProcInfo]:
    """Every process visible in /proc, by pid."""
    table: dict[int, ProcInfo] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        pid = int(entry.name)
        table[pid] = ProcInfo(pid, int(fields[1]), int(fields[2]), fields[0])
    return table


def descendants(pid: int, table: Mapping[int, ProcInfo] | None = None) -> list[int]:
    """Every process below ``pid``, children first."""
    table = process_table() if table is None else table
    children: dict[int, list[int]] = {}
    for info in table.values():
        children.setdefault(info.ppid, []).append(info.pid)
    found: list[int] = []
    stack = [pid]
    while stack:
        for child in children.get(stack.pop(), []):
            found.append(child)
            stack.append(child)
    return found


def has_children() -> bool:
    """Whether this process has any child, alive or not yet reaped (one system call)."""
    try:
        os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOHANG | os.WNOWAIT)
    except ChildProcessError:
        return False
    return True


def children_of(pid: int) -> set[int]:
    return {info.pid for info in process_table().values() if info.ppid == pid}


def group_members(pgid: int, table: Mapping[int, ProcInfo] | None = None) -> list[int]:
    """Live (not zombie) processes of process group ``pgid``."""
    table = process_table() if table is None else table
    return [info.pid for info in table.values() if info.pgid == pgid and info.alive]


def _signal(pids: Iterable[int], signum: int) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signum)


def _reap(pids: Iterable[int]) -> None:
    """Collect the exit status of those of ``pids`` that are our dead children."""
    for pid in pids:
        with contextlib.suppress(ChildProcessError, OSError):
            os.waitpid(pid, os.WNOHANG)


def kill_group(
    pgid: int, *, signum: int = signal.SIGKILL, timeout: float = DEFAULT_DEADLINE
) -> list[int]:
    """Signal process group ``pgid`` and wait until none of it is alive.

    Returns the members still alive at the deadline (empty when all are gone).
    """
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signum)
    deadline = time.monotonic() + timeout
    while True:
        members = group_members(pgid)
        _reap(members)
        if not members or time.monotonic() >= deadline:
            return members
        if signum != signal.SIGKILL:
            time.sleep(0.05)
            continue
        _signal(members, signal.SIGKILL)  # forked since the killpg
        time.sleep(0.02)


def end_tree(
    pid: int,
    *,
    pgid: int | None = None,
    spare: Iterable[int] = (),
    timeout: float = DEFAULT_DEADLINE,
) -> list[int]:
    """After child ``pid`` ended (not yet reaped), SIGKILL everything it left behind.

    That is its process group ``pgid`` and, when this process is a subreaper,
    every child of ours not in ``spare`` together with all that is below it (a
    task's shell in its own session, a daemonised grandchild). Repeats until
    nothing is left, so a process forking meanwhile cannot escape; returns the
    processes still alive at the deadline.
    """
    me = os.getpid()
    spare = set(spare) | {pid}
    deadline = time.monotonic() + timeout
    while True:
        table = process_table()
        orphans = [p for p, info in table.items() if info.ppid == me and p not in spare]
        victims = set(descendants(pid, table))
        for orphan in orphans:
            victims.add(orphan)
            victims.update(descendants(orphan, table))
        if pgid is not None:
            victims.update(group_members(pgid, table))
        living = sorted(p for p in victims if p in table and table[p].alive)
        if pgid is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pgid, signal.SIGKILL)
        _signal(living, signal.SIGKILL)
        _reap(orphans)
        if not living:
            return []
        if time.monotonic() >= deadline:
            return living
        time.sleep(0.02)


def stop_process(
    process: subprocess.Popen[Any], *, timeout: float = 30.0, signum: int = signal.SIGTERM
) -> int | None:
    """Ask a child to stop (``signum``), wait up to ``timeout``, then SIGKILL it; its exit code."""
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(signum)
        try:
            return process.wait(timeout)
        except subprocess.TimeoutExpired:
            log.warning("pid %s did not stop within %g s: killing it", process.pid, timeout)
            process.kill()
            try:
                return process.wait(DEFAULT_DEADLINE)
            except subprocess.TimeoutExpired:
                log.error("pid %s survived SIGKILL for %g s", process.pid, DEFAULT_DEADLINE)
                return None
    return process.returncode


def describe_exit(code: int | None) -> str:
    """``exited with code 3`` / ``was killed by SIGKILL``, from a Popen-style code."""
    if code is None:
        return "is still running"
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        return f"was killed by {name}"
    return f"exited with code {code}"


# -- resource limits ----------------------------------------------------------
def _cgroup_file(controller: str, name: str) -> Path | None:
    """``name`` in this process's cgroup for ``controller`` (cgroup v2, else v1)."""
    try:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        return None
    root = Path("/sys/fs/cgroup")
    candidates = []
    for line in lines:
        hierarchy, controllers, path = line.split(":", 2)
        if hierarchy == "0" and not controllers:
            candidates.append(root / path.lstrip("/") / name)
        elif controller in controllers.split(","):
            candidates.append(root / controller / path.lstrip("/") / name)
    return next((path for path in candidates if path.is_file()), None)


def _read_limit(controller: str, *names: str) -> int | None:
    for name in names:
        path = _cgroup_file(controller, name)
        if path is None:
            continue
        with contextlib.suppress(OSError, ValueError):
            value = int(path.read_text().strip())
            return value if value < 1 << 60 else None  # v1 writes "no limit" as a huge number
    return None


def memory_limit() -> int | None:
    """Bytes this service may use (systemd ``MemoryMax``), or None when unlimited."""
    return _read_limit("memory", "memory.max", "memory.limit_in_bytes")


def tasks_limit() -> int | None:
    """Processes and threads this service may have (systemd ``TasksMax``), or None."""
    return _read_limit("pids", "pids.max")


def limit_hint(code: int | None) -> str:
    """Why a process may have been killed, for a try's error: names the limit it likely hit."""
    if code != -signal.SIGKILL:
        return ""
    limit = memory_limit()
    if limit is None:
        return " (SIGKILL: killed from outside, or by the kernel for lack of memory)"
    return (
        f" (SIGKILL is what the out-of-memory killer sends: this service may use "
        f"{limit // (1024 * 1024)} MiB, MemoryMax)"
    )


def fork_failure_hint(exc: OSError) -> str:
    """What a failed fork means: EAGAIN is the process limit (TasksMax), ENOMEM memory."""
    import errno

    if exc.errno == errno.EAGAIN:
        limit = tasks_limit()
        shown = f"{limit} processes and threads" if limit else "the process limit"
        return f"this service reached {shown} (TasksMax / pids.max)"
    if exc.errno == errno.ENOMEM:
        return "out of memory (MemoryMax)"
    return str(exc)
