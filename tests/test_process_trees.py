"""Process trees: nothing a try or a DAG file starts outlives it; nothing outlives the scheduler.

Every check looks at /proc for real processes, by a marker that only the test's
own commands carry (a unique ``sleep`` duration).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

from sqlalchemy import select

from flowsched import operations
from flowsched.dag_processor import process_folder
from flowsched.db.engine import session_scope
from flowsched.db.models import ImportError_, TaskInstance
from flowsched.processes import descendants
from tests.harness import parse, run_state, tries, wait_for


def marker() -> str:
    """A ``sleep`` duration no other process on the machine uses (so /proc can find ours)."""
    return f"{300 + uuid.uuid4().int % 1000}.{uuid.uuid4().int % 10**6:06d}"


def with_marker(mark: str) -> list[int]:
    """Live processes whose command line starts with ``mark``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if cmdline.startswith(mark) and state != "Z":
            found.append(int(entry.name))
    return found


def alive(pids: list[int]) -> list[int]:
    living = []
    for pid in pids:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state != "Z":
            living.append(pid)
    return living


def kill_leftovers(pids: list[int]) -> None:
    """Cleanup when a check failed: the test must not leave what it found."""
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def start_scheduler(home, name: str) -> subprocess.Popen:
    log = open(home.root / name, "wb")  # noqa: SIM115 - closed with the process
    return subprocess.Popen(
        [sys.executable, "-m", "flowsched", "scheduler", "--no-dag-processor"],
        env={**os.environ, **home.env},
        stdout=log,
        stderr=subprocess.STDOUT,
    )


KILLED_TRY = """
from datetime import datetime, timedelta
from flowsched import DAG, BashOperator
with DAG("killed_try", schedule=None, start_date=datetime(2026, 1, 1),
         default_args={"retries": 1, "retry_delay": timedelta(0)}) as dag:
    BashOperator(task_id="t", bash_command=(
        "echo start {{ try_number }} >> LEDGER; "
        "if pgrep -f '^sleep MARK' > /dev/null; then echo overlap >> LEDGER; fi; "
        "if [ {{ try_number }} = 1 ]; then sleep MARK; fi; "
        "echo end {{ try_number }} >> LEDGER"))
"""


def running_ti(dag_id: str) -> TaskInstance | None:
    with session_scope() as session:
        ti = session.scalar(
            select(TaskInstance).where(
                TaskInstance.dag_id == dag_id, TaskInstance.state == "running"
            )
        )
        if ti is not None:
            session.expunge(ti)
        return ti


def test_kill_9_of_a_try_kills_its_shell_before_the_retry_starts(sqlite_home):
    mark, ledger = marker(), sqlite_home.root / "ledger"
    sqlite_home.write_dag(
        "killed_try.py", KILLED_TRY.replace("MARK", mark).replace("LEDGER", str(ledger))
    )
    parse()
    operations.trigger_dag("killed_try", run_id="k")
    scheduler = start_scheduler(sqlite_home, "scheduler.log")
    try:
        wait_for(lambda: with_marker(f"sleep {mark}") and running_ti("killed_try"), 60)
        ti = running_ti("killed_try")
        os.kill(ti.pid, signal.SIGKILL)  # the try's Python process, as the OOM killer would
        wait_for(lambda: run_state("killed_try", "k") == "success", 60)
        leftovers = with_marker(f"sleep {mark}")
    finally:
        scheduler.send_signal(signal.SIGTERM)
        scheduler.wait(60)
    kill_leftovers(leftovers)
    assert leftovers == [], "try 1's `sleep` outlived its try"
    # Try 2 started only once nothing of try 1 was left, and try 1 never finished.
    assert ledger.read_text().split("\n") == ["start 1", "start 2", "end 2", ""]
    first, second = tries("killed_try", "t")
    assert "was killed by SIGKILL" in first.error and first.state == "failed"
    assert second.state == "success"


def test_kill_9_of_the_scheduler_takes_its_pool_and_tries_with_it(sqlite_home):
    mark = marker()
    sqlite_home.write_dag(
        "long.py",
        f"""
from datetime import datetime
from flowsched import DAG, BashOperator
with DAG("long", schedule=None, start_date=datetime(2026, 1, 1)) as dag:
    BashOperator(task_id="t", bash_command="sleep {mark}; echo never")
""",
    )
    parse()
    operations.trigger_dag("long", run_id="l")
    scheduler = start_scheduler(sqlite_home, "victim.log")
    try:
        wait_for(lambda: with_marker(f"sleep {mark}") and running_ti("long"), 60)
        below = descendants(scheduler.pid)
        assert len(below) >= 4  # pool processes, the try, its shell and sleep
    finally:
        scheduler.kill()
        scheduler.wait(10)
    try:
        wait_for(lambda: not alive(below), 30)
    finally:
        kill_leftovers(alive(below))
    # The try was interrupted (it knew: its parent-death signal), not left to run alone.
    (only,) = tries("long", "t")
    assert "will be retried" in (only.error or ""), only.error


FORKS = """
import os, signal, time
if os.fork() == 0:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    os.execvp("sleep", ["sleep", "MARK"])
from datetime import datetime
from flowsched import DAG
DAG("forks", start_date=datetime(2026, 1, 1))
"""


def errors() -> dict[str, str]:
    with session_scope() as session:
        return {e.filename: e.traceback for e in session.scalars(select(ImportError_))}


def test_a_dag_file_that_forks_leaves_no_process_behind(sqlite_home):
    mark = marker()
    sqlite_home.write_dag("forks.py", FORKS.replace("MARK", mark))
    for _ in range(2):  # two parse cycles: before the fix, one orphan each
        report = process_folder()
        assert report.errors == [] and report.dags == 1
    leftovers = with_marker(f"sleep {mark}")
    kill_leftovers(leftovers)
    assert leftovers == []


def test_a_dag_file_using_too_much_memory_is_an_import_error_naming_it(sqlite_home):
    sqlite_home.write_dag("greedy.py", "block = bytearray(1536 * 1024 * 1024)\n")
    sqlite_home.write_dag(
        "small.py",
        "from datetime import datetime\nfrom flowsched import DAG\n"
        "block = bytearray(64 * 1024 * 1024)\n"
        "DAG('small', start_date=datetime(2026, 1, 1))\n",
    )
    report = process_folder()
    found = errors()
    assert set(found) == {"greedy.py"}, found  # the default limit (1024 MiB) holds it back
    assert found["greedy.py"] == (
        "greedy.py: the import needed more than core.dagbag_import_memory_limit "
        "(1024 MiB) of memory"
    )
    assert report.dags == 1
    sqlite_home.configure(core={"dagbag_import_memory_limit": "0"})  # 0: no limit
    assert process_folder().errors == []


def test_os_exit_during_import_is_reported_with_its_exit_code(sqlite_home):
    sqlite_home.write_dag("exits.py", "import os\nos._exit(7)\n")
    sqlite_home.write_dag("killed.py", "import os, signal\nos.kill(os.getpid(), signal.SIGKILL)\n")
    started = time.monotonic()
    process_folder()
    assert time.monotonic() - started < 8  # reported at once, not at the import timeout
    found = errors()
    assert found["exits.py"] == "exits.py: the import process exited with code 7 before reporting"
    assert found["killed.py"].startswith(
        "killed.py: the import process was killed by SIGKILL before reporting"
    )
