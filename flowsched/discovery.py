"""Finding and importing DAG files, each in isolation.

Files are imported in forked import children, each with a deadline per file and
a memory cap, in its own process group. A child is warm: it imports many files
in turn (a fork per child and pass, not per file), and is ended with its whole
group as soon as a file it imported started a process, ran out of memory, timed
out or killed it; a fresh child takes the next file. So a file that raises,
loops, blocks, forks or eats memory only produces an import error for itself.
The child hashes the exact bytes it compiles, so the fingerprint always matches
the code that defined the DAG.
"""

from __future__ import annotations

import contextlib
import fnmatch
import hashlib
import json
import multiprocessing
import os
import resource
import signal
import sys
import time
import traceback
import types
from collections.abc import Iterator
from dataclasses import dataclass, field
from multiprocessing.connection import Connection, wait
from pathlib import Path
from typing import Any

from flowsched.exceptions import DagDefinitionError, DagFileMismatch
from flowsched.processes import (
    DEFAULT_DEADLINE,
    describe_exit,
    kill_group,
    set_parent_death_signal,
)

IGNORE_FILE = ".flowschedignore"


def fingerprint_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _ignored(relative: str, patterns: list[tuple[str, str]]) -> bool:
    for base, pattern in patterns:
        if base and not (relative == base or relative.startswith(base + "/")):
            continue
        local = relative[len(base) + 1 :] if base else relative
        candidates = [local, *local.split("/")]
        if any(fnmatch.fnmatch(candidate, pattern) for candidate in candidates):
            return True
    return False


def list_dag_files(folder: Path) -> list[Path]:
    """Every ``.py`` file under ``folder``, minus ``.flowschedignore`` matches.

    A ``.flowschedignore`` holds glob patterns (one a line, ``#`` comments)
    that apply to its own folder and below, like ``.gitignore``.
    """
    folder = Path(folder)
    if not folder.is_dir():
        return []
    patterns: list[tuple[str, str]] = []
    found: list[Path] = []
    for root, dirs, files in os.walk(folder, followlinks=True):
        relative_root = os.path.relpath(root, folder)
        relative_root = "" if relative_root == "." else relative_root
        if IGNORE_FILE in files:
            for line in (Path(root) / IGNORE_FILE).read_text(encoding="utf-8").splitlines():
                line = line.strip()
                if line and not line.startswith("#"):
                    patterns.append((relative_root, line.rstrip("/")))
        dirs[:] = sorted(
            d
            for d in dirs
            if not d.startswith((".", "__pycache__"))
            and not _ignored(os.path.join(relative_root, d) if relative_root else d, patterns)
        )
        for name in sorted(files):
            if not name.endswith(".py"):
                continue
            relative = os.path.join(relative_root, name) if relative_root else name
            if not _ignored(relative, patterns):
                found.append(Path(root) / name)
    return found


def module_name_for(relative: str) -> str:
    return "flowsched_dag_" + hashlib.sha1(relative.encode()).hexdigest()[:16]


def exec_dag_file(
    path: Path, relative: str, expected: str | None = None
) -> tuple[str, bytes, list[Any]]:
    """Import ``path`` as a fresh module; return (fingerprint, source, DAGs it defined).

    With ``expected``, refuse to run a file whose fingerprint differs: a worker
    must never execute code other than what the scheduler queued.
    """
    from flowsched.dag import DAG, DagContext
    from flowsched.plugins import ensure_on_path

    ensure_on_path()
    data = path.read_bytes()
    fingerprint = fingerprint_bytes(data)
    if expected is not None and fingerprint != expected:
        raise DagFileMismatch(fingerprint)
    name = module_name_for(relative)
    module = types.ModuleType(name)
    module.__file__ = str(path)
    sys.modules[name] = module
    folder = str(path.parent)
    if folder not in sys.path:
        sys.path.insert(0, folder)
    DagContext.created.clear()
    code = compile(data, str(path), "exec")
    exec(code, module.__dict__)
    dags: list[DAG] = []
    seen: set[int] = set()
    for candidate in [*module.__dict__.values(), *DagContext.created]:
        if isinstance(candidate, DAG) and id(candidate) not in seen:
            seen.add(id(candidate))
            candidate.fileloc = relative
            dags.append(candidate)
    DagContext.created.clear()
    return fingerprint, data, dags


@dataclass
class ParseResult:
    relative: str
    fingerprint: str | None = None
    source: str | None = None
    dags: list[dict[str, Any]] = field(default_factory=list)
    error: str | None = None
    duration: float = 0.0


# Audit events by which a DAG file starts another process (sys.addaudithook): an import
# child that saw one is retired after the file, its whole process group killed with it.
_SPAWN_EVENTS = frozenset(
    {"os.fork", "os.forkpty", "os.posix_spawn", "os.system", "subprocess.Popen", "pty.spawn"}
)


def _parse_one(path: Path, relative: str, memory_limit: int) -> dict[str, Any]:
    """Import one file in this (import child) process: what the parent is sent back."""
    result: dict[str, Any] = {"relative": relative}
    name = module_name_for(relative)
    try:
        fingerprint, source, dags = exec_dag_file(path, relative)
        result["fingerprint"] = fingerprint
        result["source"] = source.decode("utf-8", errors="replace")
        ids: dict[str, int] = {}
        serialized = []
        for dag in dags:
            if dag.dag_id in ids:
                raise DagDefinitionError(f"DAG id '{dag.dag_id}' is defined twice in {relative}")
            ids[dag.dag_id] = 1
            data = dag.to_dict()
            data["fileloc"] = relative
            serialized.append(data)
        result["dags"] = serialized
    except DagDefinitionError as exc:
        result["error"] = f"{relative}: {exc}"
    except MemoryError:
        result = {"relative": relative, "error": _memory_error(relative, memory_limit)}
        result["retire"] = True  # its heap may be left in pieces: a fresh child goes on
    except BaseException:
        result["error"] = traceback.format_exc()
    finally:
        # The next file starts from a clean slate: no module, no DAG left of this one.
        sys.modules.pop(name, None)
    return result


def _send(connection: Connection, result: dict[str, Any]) -> None:
    try:
        connection.send_bytes(json.dumps(result, default=str).encode())
    except Exception:
        payload = {"relative": result["relative"], "error": traceback.format_exc()}
        if result.get("retire"):
            payload["retire"] = True
        connection.send_bytes(json.dumps(payload).encode())


def _memory_error(relative: str, limit: int) -> str:
    return (
        f"{relative}: the import needed more than core.dagbag_import_memory_limit "
        f"({limit} MiB) of memory"
    )


def _limit_memory(mebibytes: int) -> None:
    """Cap this process's address space at what it has now plus ``mebibytes``."""
    if mebibytes <= 0:
        return
    with open("/proc/self/statm", encoding="ascii") as handle:
        current = int(handle.read().split()[0]) * resource.getpagesize()
    _, hard = resource.getrlimit(resource.RLIMIT_AS)
    soft = current + mebibytes * 1024 * 1024
    if hard != resource.RLIM_INFINITY:
        soft = min(soft, hard)
    resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


def _child_main(connection: Connection, parent: int, memory_limit: int) -> None:
    """An import child: imports the files it is sent, one at a time, until told to stop
    (an empty request) or retired (the file it imported started a process, or ran out
    of memory).

    In its own process group, killed whole when the child is retired: whatever a file
    forked goes with it. Dies with its parent; never reads the parent's terminal.
    """
    with contextlib.suppress(OSError):
        os.setpgid(0, 0)
    set_parent_death_signal(signal.SIGKILL, parent)
    _limit_memory(memory_limit)
    devnull = os.open(os.devnull, os.O_RDWR)
    os.dup2(devnull, 0)
    spawned: list[str] = []

    def audit(event: str, _args: tuple[Any, ...]) -> None:
        if event in _SPAWN_EVENTS:
            spawned.append(event)

    sys.addaudithook(audit)
    while True:
        try:
            request = connection.recv_bytes()
        except (EOFError, OSError):
            break
        if not request:
            break
        path, relative = json.loads(request)
        spawned.clear()
        result = _parse_one(Path(path), relative, memory_limit)
        if spawned:
            result["retire"] = True
        _send(connection, result)
        if result.get("retire"):
            break
    connection.close()
    os._exit(0)


def _died(relative: str, process: Any, memory_limit: int) -> str:
    """Why an import child sent nothing: its real exit code or signal."""
    code = process.exitcode
    message = f"{relative}: the import process {describe_exit(code)} before reporting"
    if code is not None and code < 0 and memory_limit > 0:
        message += f" (core.dagbag_import_memory_limit is {memory_limit} MiB)"
    return message


@dataclass
class _ImportChild:
    """A warm import child: forked once, it imports many files in turn under its
    rlimits, so a pass costs a fork per child, not a fork per file."""

    process: Any
    connection: Connection
    relative: str | None = None  # the file it is importing now
    started: float = 0.0

    @classmethod
    def start(cls, context: Any, memory_limit: int) -> _ImportChild:
        ours, theirs = context.Pipe(duplex=True)
        process = context.Process(target=_child_main, args=(theirs, os.getpid(), memory_limit))
        process.start()
        with contextlib.suppress(OSError):
            os.setpgid(process.pid, process.pid)  # also done by the child: no race
        theirs.close()
        return cls(process, ours)

    def send(self, path: Path, relative: str) -> bool:
        """Hand it a file; False if it is gone (it then imports nothing)."""
        self.relative, self.started = relative, time.monotonic()
        try:
            self.connection.send_bytes(json.dumps([str(path), relative]).encode())
        except OSError:
            return False
        return True

    def receive(self) -> dict[str, Any] | None:
        try:
            return json.loads(self.connection.recv_bytes())
        except (EOFError, OSError, ValueError):
            return None

    def end(self) -> None:
        """Stop it and kill what is left of its process group, then collect it."""
        with contextlib.suppress(OSError):
            self.connection.send_bytes(b"")
        self.connection.close()
        kill_group(self.process.pid)
        self.process.join(DEFAULT_DEADLINE)


def parse_files(
    folder: Path, paths: list[Path], timeout: float, processes: int, memory_limit: int = 0
) -> Iterator[ParseResult]:
    """Import the files in up to ``processes`` warm import children, one file each at a time.

    Each child has its own process group and an address space capped at
    ``memory_limit`` MiB more than ours (0: no cap). A child whose file started a
    process, ran out of memory, timed out or killed it is ended with its whole
    group before the next file, and a fresh one takes over; every child's group
    is killed when the files are done.
    """
    context = multiprocessing.get_context("fork")
    pending = list(paths)
    pending.reverse()  # popped from the end: in listing order
    idle: list[_ImportChild] = []
    busy: dict[Connection, _ImportChild] = {}
    try:
        while pending or busy:
            while pending and len(busy) < processes:
                path = pending.pop()
                relative = str(path.relative_to(folder))
                child = idle.pop() if idle else _ImportChild.start(context, memory_limit)
                if not child.send(path, relative):  # it died between files: a fresh one
                    child.end()
                    child = _ImportChild.start(context, memory_limit)
                    child.send(path, relative)  # if this one is gone too, its death says why
                busy[child.connection] = child
            now = time.monotonic()
            nearest = min(child.started + timeout for child in busy.values())
            for connection in wait(list(busy), timeout=max(0.0, nearest - now)):
                child = busy.pop(connection)  # type: ignore[arg-type]
                relative = child.relative or ""
                payload = child.receive()
                if payload is None:
                    child.end()  # the exit code is known once it is collected
                    result = ParseResult(
                        relative=relative, error=_died(relative, child.process, memory_limit)
                    )
                else:
                    result = ParseResult(
                        relative=relative,
                        fingerprint=payload.get("fingerprint"),
                        source=payload.get("source"),
                        dags=payload.get("dags", []),
                        error=payload.get("error"),
                    )
                    if payload.get("retire"):
                        child.end()
                    else:
                        idle.append(child)
                result.duration = time.monotonic() - child.started
                yield result
            now = time.monotonic()
            for connection, child in list(busy.items()):
                if now - child.started >= timeout:
                    del busy[connection]
                    child.end()
                    yield ParseResult(
                        relative=child.relative or "",
                        error=f"{child.relative}: import timed out after {timeout:g} s "
                        "(core.dagbag_import_timeout)",
                        duration=now - child.started,
                    )
    finally:
        for child in [*idle, *busy.values()]:
            child.end()
