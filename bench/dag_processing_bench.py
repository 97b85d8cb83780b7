"""DAG processing: a cold parse, and how long one edited file takes to go live.

* cold parse: ``process_folder()`` over N small DAG files (1,000 by default)
  in an empty database, as the first pass of ``flowsched dag-processor``;
* one edit among M files (10,000 by default): a ``flowsched dag-processor``
  process runs on the folder; once it has taken every file in, one file is
  rewritten (a new task) and the time until its new version is the DAG's
  latest in the database is measured, with the processor's pass time (from
  its log) beside it.

Figures are printed, never asserted.

    .venv/bin/python bench/dag_processing_bench.py [--cold 1000] [--files 10000]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sqlalchemy import func, select  # noqa: E402

from bench.core_bench import SMALL, configure  # noqa: E402
from flowsched.dag_processor import process_folder  # noqa: E402
from flowsched.db.engine import reset_engine, session_scope  # noqa: E402
from flowsched.db.models import Dag, DagVersion  # noqa: E402

# The edit adds a task, so the file gets a new fingerprint and the DAG a new version.
EDITED = SMALL.replace(
    "    a >> b\n", '    a >> b\n    c = BashOperator(task_id="c", bash_command="true")\n'
)


def write_files(folder: Path, count: int) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for n in range(count):
        (folder / f"dag_{n:05d}.py").write_text(SMALL.format(n=n))


def dag_count() -> int:
    with session_scope(read_only=True) as session:
        return int(session.scalar(select(func.count()).select_from(Dag)) or 0)


def version_count(dag_id: str) -> int:
    with session_scope(read_only=True) as session:
        return int(
            session.scalar(
                select(func.count()).select_from(DagVersion).where(DagVersion.dag_id == dag_id)
            )
            or 0
        )


def wait_for(condition, timeout: float, what: str) -> float:
    started = time.monotonic()
    while not condition():
        if time.monotonic() - started > timeout:
            raise TimeoutError(f"{what} not within {timeout:g} s")
        time.sleep(0.05)
    return time.monotonic() - started


def cold_parse(tmp: Path, count: int) -> None:
    configure(tmp, f"sqlite:///{tmp}/cold.db", 4)
    write_files(tmp / "dags", count)
    started = time.monotonic()
    report = process_folder()
    elapsed = time.monotonic() - started
    print(
        f"cold parse of {count} DAG files: {elapsed:.1f}s ({count / elapsed:.0f} files/s, "
        f"{report.dags} DAGs, {len(report.errors)} errors)"
    )
    reset_engine()


def live_edit(tmp: Path, count: int, timeout: float) -> None:
    configure(tmp, f"sqlite:///{tmp}/edit.db", 4)
    dags = tmp / "dags"
    write_files(dags, count)
    env = {
        **os.environ,
        "FLOWSCHED_HOME": str(tmp),
        "FLOWSCHED_CONFIG": str(tmp / "flowsched.cfg"),
        "FLOWSCHED__SCHEDULER__DAG_DIR_LIST_INTERVAL": "1",
    }
    log = (tmp / "dag-processor.log").open("wb")
    processor = subprocess.Popen(
        [sys.executable, "-m", "flowsched", "dag-processor"],
        env=env,
        cwd=ROOT,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        first = wait_for(lambda: dag_count() >= count, timeout, f"{count} DAGs")
        print(f"{count} DAG files: first pass of the dag-processor took in all in {first:.1f}s")
        # One of the files (the middle one: any --files count has it).
        edited = count // 2
        target = f"parse_{edited:04d}"  # the DAG id of core_bench.SMALL
        before = version_count(target)
        time.sleep(1.0)  # the edit lands while the processor is between or in passes
        (dags / f"dag_{edited:05d}.py").write_text(EDITED.format(n=edited))
        live = wait_for(lambda: version_count(target) > before, timeout, "the edit")
        print(f"one edited file among {count}: live in {live:.2f}s")
    finally:
        processor.terminate()
        processor.wait(60)
        log.close()
        passes = [
            line.split(" in ")[-1].split("s")[0]
            for line in (tmp / "dag-processor.log").read_text(errors="replace").splitlines()
            if "parsed " in line and " DAGs, " in line
        ]
        if passes:
            print(f"dag-processor pass times (s): {', '.join(passes[-5:])}")
        reset_engine()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--cold", type=int, default=1000, help="files for the cold parse")
    parser.add_argument("--files", type=int, default=10_000, help="files for the edit")
    parser.add_argument("--timeout", type=float, default=3600)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        cold_parse(Path(tmp), args.cold)
    with tempfile.TemporaryDirectory() as tmp:
        live_edit(Path(tmp), args.files, args.timeout)


if __name__ == "__main__":
    main()
