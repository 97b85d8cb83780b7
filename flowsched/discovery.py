"""Finding and importing DAG files, each in isolation.

Each file is imported in a forked child with a deadline and a memory cap, in
its own process group killed after the file, so a file that raises, loops,
blocks, forks or eats memory only produces an import error for itself. The
child hashes the exact bytes it compiles, so the fingerprint always matches
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


def _parse_in_child(path: Path, relative: str, connection: Connection, memory_limit: int) -> None:
    result: dict[str, Any] = {"relative": relative}
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
    except BaseException:
        result["error"] = traceback.format_exc()
    try:
        connection.send_bytes(json.dumps(result, default=str).encode())
    except Exception:
        connection.send_bytes(
            json.dumps({"relative": relative, "error": traceback.format_exc()}).encode()
        )
    connection.close()


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


def _child_main(
    path: str, relative: str, connection: Connection, parent: int, memory_limit: int
) -> None:
    # In its own process group, killed whole after the file: whatever the file forked
    # goes with it. Dies with its parent; never writes to the parent's terminal.
    with contextlib.suppress(OSError):
        os.setpgid(0, 0)
    set_parent_death_signal(signal.SIGKILL, parent)
    _limit_memory(memory_limit)
    devnull = os.open(os.devnull, os.O_RDWR)
    os.dup2(devnull, 0)
    _parse_in_child(Path(path), relative, connection, memory_limit)
    os._exit(0)


def _died(relative: str, process: Any, memory_limit: int) -> str:
    """Why an import child sent nothing: its real exit code or signal."""
    code = process.exitcode
    message = f"{relative}: the import process {describe_exit(code)} before reporting"
    if code is not None and code < 0 and memory_limit > 0:
        message += f" (core.dagbag_import_memory_limit is {memory_limit} MiB)"
    return message


def _end(process: Any) -> None:
    """Kill what is left of an import child's group, then collect the child."""
    kill_group(process.pid)
    process.join(DEFAULT_DEADLINE)


def parse_files(
    folder: Path, paths: list[Path], timeout: float, processes: int, memory_limit: int = 0
) -> Iterator[ParseResult]:
    """Import each file in its own forked child, ``processes`` at a time.

    Each child has its own process group, killed after its file, and an address
    space capped at ``memory_limit`` MiB more than ours (0: no cap).
    """
    context = multiprocessing.get_context("fork")
    pending = list(paths)
    running: dict[Connection, tuple[Any, str, float]] = {}
    while pending or running:
        while pending and len(running) < processes:
            path = pending.pop(0)
            relative = str(path.relative_to(folder))
            receiver, sender = context.Pipe(duplex=False)
            process = context.Process(
                target=_child_main,
                args=(str(path), relative, sender, os.getpid(), memory_limit),
            )
            process.start()
            with contextlib.suppress(OSError):
                os.setpgid(process.pid, process.pid)  # also done by the child: no race
            sender.close()
            running[receiver] = (process, relative, time.monotonic())
        now = time.monotonic()
        nearest = min(started + timeout for _, _, started in running.values())
        ready = wait(list(running), timeout=max(0.0, nearest - now))
        for receiver in ready:
            process, relative, started = running.pop(receiver)  # type: ignore[index]
            try:
                payload = json.loads(receiver.recv_bytes())
                result = ParseResult(
                    relative=relative,
                    fingerprint=payload.get("fingerprint"),
                    source=payload.get("source"),
                    dags=payload.get("dags", []),
                    error=payload.get("error"),
                )
            except (EOFError, OSError, ValueError):
                result = None
            receiver.close()
            if result is None:
                process.join(DEFAULT_DEADLINE)  # the exit code is known once it is collected
                result = ParseResult(
                    relative=relative, error=_died(relative, process, memory_limit)
                )
            _end(process)
            result.duration = time.monotonic() - started
            yield result
        now = time.monotonic()
        for receiver, (process, relative, started) in list(running.items()):
            if now - started >= timeout:
                _end(process)
                receiver.close()
                del running[receiver]
                yield ParseResult(
                    relative=relative,
                    error=f"{relative}: import timed out after {timeout:g} s "
                    "(core.dagbag_import_timeout)",
                    duration=now - started,
                )
