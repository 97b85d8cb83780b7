"""The floor under a try's cost: a process per try, forked from a warm process.

Every try runs in its own process, forked from the process that holds the imports
(a Celery pool process, a LocalExecutor process). Whatever the try does, that
fork and exit cost something, and so does each page of memory the try writes to
for the first time after the fork (copy-on-write: Python writes an object's
reference count each time it uses it, so running code copies the pages its
objects sit on). This prints both, measured here, in a process that imported
what a try needs, so the per-try figures of core_bench.py and celery_bench.py
can be read against them:

* fork + exit with nothing run: the child's CPU (its start and its teardown),
  the parent's (copying the page tables), and the wall time;
* the cost of one copied page: a child writing to N pages minus one writing none.

No database or server is needed.
"""

from __future__ import annotations

import argparse
import os
import resource
import time
from pathlib import Path

PAGE = os.sysconf("SC_PAGE_SIZE")


def _cpu_ms(usage: resource.struct_rusage) -> float:
    return (usage.ru_utime + usage.ru_stime) * 1000


def fork_cost(forks: int, child: object) -> tuple[float, float, float]:
    """(child CPU ms, parent CPU ms, wall ms) per fork whose child runs ``child()``."""
    children, parent = (
        resource.getrusage(resource.RUSAGE_CHILDREN),
        resource.getrusage(resource.RUSAGE_SELF),
    )
    started = time.perf_counter()
    for _ in range(forks):
        pid = os.fork()
        if pid == 0:
            try:
                child()  # type: ignore[operator]
            finally:
                os._exit(0)
        os.waitpid(pid, 0)
    wall = (time.perf_counter() - started) * 1000 / forks
    children_after = resource.getrusage(resource.RUSAGE_CHILDREN)
    parent_after = resource.getrusage(resource.RUSAGE_SELF)
    return (
        (_cpu_ms(children_after) - _cpu_ms(children)) / forks,
        (_cpu_ms(parent_after) - _cpu_ms(parent)) / forks,
        wall,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--forks", type=int, default=200)
    parser.add_argument("--pages", type=int, default=2000, help="pages the child writes")
    args = parser.parse_args()

    from flowsched.supervisor import preload_imports

    preload_imports()  # as a pool process does before it forks its first try
    resident = int(Path("/proc/self/statm").read_text().split()[1]) * PAGE
    print(
        f"forking process: {resident / 1e6:.0f} MB resident (flowsched, its operators "
        "and the database driver imported)"
    )
    child, parent, wall = fork_cost(args.forks, lambda: None)
    print(
        f"fork + exit, nothing run: child {child:.2f} ms CPU, parent {parent:.2f} ms CPU, "
        f"{wall:.2f} ms wall ({args.forks} forks)"
    )
    buffer = bytearray(args.pages * PAGE)
    for offset in range(0, len(buffer), PAGE):
        buffer[offset] = 1  # resident before the fork: the child copies, not allocates

    def write_pages() -> None:
        for offset in range(0, len(buffer), PAGE):
            buffer[offset] = 2

    written, _, _ = fork_cost(args.forks, write_pages)
    bare, _, _ = fork_cost(args.forks, lambda: None)
    per_page_us = (written - bare) * 1000 / args.pages
    print(
        f"copy-on-write: {per_page_us:.2f} us per page written after the fork "
        f"(a child writing {args.pages} pages: {written:.2f} ms CPU, writing none: {bare:.2f} ms)"
    )


if __name__ == "__main__":
    main()
