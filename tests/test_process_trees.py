"""Process trees: nothing a try or a DAG file starts outlives it; nothing outlives the scheduler.

Every check looks at /proc for real processes, by a marker that only the test's
own commands carry (a unique ``sleep`` duration).
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

from sqlalchemy import select

from flowsched import operations
from flowsched.dag_processor import process_folder
from flowsched.db.engine import session_scope
from flowsched.db.models import ImportError_, TaskInstance
from flowsched.processes import descendants
from tests.harness import parse, run_state, tries, wait_for
from tests.servers import free_port
from tests.test_resilience import start_scheduler


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


def ps(pids: list[int]) -> str:
    """What these processes are, for a failure message."""
    if not pids:
        return ""
    return subprocess.run(
        ["ps", "-o", "pid,ppid,pgid,stat,args", "-p", ",".join(map(str, pids))],
        capture_output=True,
        text=True,
        timeout=10,
        check=False,
    ).stdout


def kill_leftovers(pids: list[int]) -> None:
    """Cleanup when a check failed: the test must not leave what it found."""
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def assert_all_gone(pids: list[int], timeout: float = 30) -> None:
    """Wait until none of ``pids`` is alive; kill and name those left at the deadline."""
    with contextlib.suppress(AssertionError):
        wait_for(lambda: not alive(pids), timeout)
    leftovers = alive(pids)
    listing = ps(leftovers)
    kill_leftovers(leftovers)
    assert leftovers == [], listing


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
    assert_all_gone(below)
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
    # A long import timeout: reported at once, not when the timeout ends the wait.
    sqlite_home.configure(core={"dagbag_import_timeout": "300"})
    started = time.monotonic()
    process_folder()
    assert time.monotonic() - started < 150
    found = errors()
    assert found["exits.py"] == "exits.py: the import process exited with code 7 before reporting"
    assert found["killed.py"].startswith(
        "killed.py: the import process was killed by SIGKILL before reporting"
    )


# -- flowsched standalone ------------------------------------------------------
FLOWSCHED = str(Path(sys.executable).parent / "flowsched")  # the console script a user runs


def http_status(url: str) -> int | None:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status
    except OSError:
        return None


# The last line of the banner standalone prints once its start-up is over.
READY = "Ctrl-C stops everything"


class Standalone:
    """``flowsched standalone`` in a fresh $HOME, as a new user would start it."""

    def __init__(self, tmp_path: Path, *, home_env: bool = True) -> None:
        self.port = free_port()
        self.root = tmp_path
        self.home = tmp_path / "flowsched"  # the default data folder, ~/flowsched
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("FLOWSCHED")}
        self.env.update(
            HOME=str(tmp_path),
            FLOWSCHED__SCHEDULER__SHUTDOWN_GRACE="3",
            FLOWSCHED__SCHEDULER__DAG_DIR_LIST_INTERVAL="1",
            FLOWSCHED__WEBSERVER__BIND=f"127.0.0.1:{self.port}",
        )
        if home_env:
            self.env["FLOWSCHED_HOME"] = str(self.home)
        self.process: subprocess.Popen | None = None
        self.output = tmp_path / "standalone.out"
        self._banners = 0

    def start(self) -> subprocess.Popen:
        self._banners = self.text().count(READY) if self.output.exists() else 0
        with self.output.open("ab") as sink:
            self.process = subprocess.Popen(
                [FLOWSCHED, "standalone"],
                cwd=self.root,  # the home directory, which holds ./flowsched
                env=self.env,
                stdout=sink,
                stderr=subprocess.STDOUT,
            )
        return self.process

    def text(self) -> str:
        return self.output.read_text(errors="replace")

    def healthy(self) -> bool:
        return http_status(f"http://127.0.0.1:{self.port}/api/v1/health") == 200

    def wait_healthy(self, timeout: float = 90) -> None:
        """Until this start has printed its banner (its start-up is over: a component that
        dies from now on is restarted, not a failed start) and the webserver answers."""

        def check() -> bool:
            assert self.process is not None and self.process.poll() is None, self.text()
            return self.text().count(READY) > self._banners and self.healthy()

        wait_for(check, timeout)

    def child(self, word: str) -> int:
        """The pid of the direct child whose command line has ``word``."""
        assert self.process is not None
        for pid in descendants(self.process.pid):
            try:
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
                ppid = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
            except OSError:
                continue
            if ppid == self.process.pid and word.encode() in cmdline:
                return pid
        raise AssertionError(f"no {word} child of standalone:\n{self.text()[-3000:]}")

    def stop(self) -> int | None:
        """Ctrl-C, then make sure nothing of it is left."""
        if self.process is None:
            return None
        below = descendants(self.process.pid)
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        kill_leftovers(alive(below))
        return self.process.returncode


def flowsched_cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [FLOWSCHED, *args], env=env, capture_output=True, text=True, timeout=60, check=False
    )


def test_kill_9_of_standalone_leaves_nothing_behind_and_it_starts_again(tmp_path):
    mark = marker()
    standalone = Standalone(tmp_path)
    (standalone.home / "dags").mkdir(parents=True)
    (standalone.home / "dags" / "long.py").write_text(
        "from datetime import datetime\nfrom flowsched import DAG, BashOperator\n"
        "with DAG('long', schedule=None, start_date=datetime(2026, 1, 1)) as dag:\n"
        f"    BashOperator(task_id='t', bash_command='sleep {mark}')\n"
    )
    standalone.start()
    try:
        standalone.wait_healthy()
        assert flowsched_cli(standalone.env, "dags", "trigger", "long").returncode == 0
        wait_for(lambda: with_marker(f"sleep {mark}"), 60)
        standalone.child("webserver"), standalone.child("dag-processor")
        below = descendants(standalone.process.pid)
        standalone.process.kill()
        standalone.process.wait(10)
        assert_all_gone(below)
        assert not standalone.healthy()
        # Started again, it gets its port and its components back.
        standalone.start()
        standalone.wait_healthy()
        standalone.child("dag-processor")
    finally:
        code = standalone.stop()
    assert code == 0, standalone.text()[-3000:]


def test_standalone_restarts_a_component_that_dies_then_gives_up(tmp_path):
    standalone = Standalone(tmp_path)
    standalone.start()
    try:
        standalone.wait_healthy()
        os.kill(standalone.child("webserver"), signal.SIGKILL)
        wait_for(lambda: "the webserver was killed by SIGKILL; restarting it" in standalone.text())
        standalone.wait_healthy()  # back
        processor = standalone.child("dag-processor")
        for _ in range(4):  # a fourth death within the window: it stops, and says why
            os.kill(processor, signal.SIGKILL)
            wait_for(lambda: processor not in descendants(standalone.process.pid), 30)

            def restarted() -> bool:
                nonlocal processor
                with contextlib.suppress(AssertionError):
                    processor = standalone.child("dag-processor")
                    return True
                return standalone.process.poll() is not None

            wait_for(restarted, 30)
        assert standalone.process.wait(60) == 1
    finally:
        standalone.stop()
    output = standalone.text()
    assert "the DAG processor was killed by SIGKILL; restarting it in 1 s (1 of 3)" in output
    assert (
        "error: flowsched standalone: the DAG processor was killed by SIGKILL 4 times "
        "within 600 s; stopping everything" in output
    )


def test_standalone_refuses_a_port_it_cannot_bind_with_a_clear_error(tmp_path):
    standalone = Standalone(tmp_path)
    with socket.create_server(("127.0.0.1", standalone.port)):
        standalone.start()
        try:
            assert standalone.process.wait(60) == 1
        finally:
            standalone.stop()
    assert (
        f"error: the webserver cannot listen on 127.0.0.1:{standalone.port} ([webserver] bind): "
        "Address already in use (another webserver or flowsched standalone is running?)"
    ) in standalone.text()


def test_standalone_from_the_home_directory_is_not_shadowed_by_the_data_folder(tmp_path):
    standalone = Standalone(tmp_path, home_env=False)  # ~/flowsched by default, cwd ~
    standalone.start()
    try:
        standalone.wait_healthy()  # the webserver, a `python -m flowsched` child, started
        (standalone.home / "dags" / "late.py").write_text(
            "from datetime import datetime\nfrom flowsched import DAG\n"
            "DAG('late', schedule=None, start_date=datetime(2026, 1, 1))\n"
        )
        # ...and so did the DAG processor, which finds the new file.
        wait_for(lambda: "late" in flowsched_cli(standalone.env, "dags", "list").stdout, 60)
    finally:
        code = standalone.stop()
    assert code == 0, standalone.text()[-3000:]
    assert "ImportError" not in standalone.text()


# -- resource limits (the cgroup controls systemd's MemoryMax and TasksMax set) ----
@contextlib.contextmanager
def child_cgroup(controller: str) -> Iterator[Path]:
    """A cgroup (v1 hierarchy of this machine) below this process's own, removed after."""
    own = next(
        line.split(":", 2)[2]
        for line in Path("/proc/self/cgroup").read_text().splitlines()
        if controller in line.split(":", 2)[1].split(",")
    )
    path = (
        Path("/sys/fs/cgroup") / controller / own.lstrip("/") / f"flowsched-{uuid.uuid4().hex[:8]}"
    )
    path.mkdir()
    try:
        yield path
    finally:
        for pid in (path / "cgroup.procs").read_text().split():
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(pid), signal.SIGKILL)
        wait_for(lambda: not (path / "cgroup.procs").read_text().strip(), 10)
        path.rmdir()


def start_scheduler_in(cgroup: Path, home, name: str) -> subprocess.Popen:
    """The scheduler and everything it forks in ``cgroup``, as under systemd."""
    log = open(home.root / name, "wb")  # noqa: SIM115 - closed with the process
    return subprocess.Popen(
        [
            "sh",
            "-c",
            f'echo $$ > {cgroup / "cgroup.procs"} && exec "$0" -m flowsched scheduler '
            "--no-dag-processor",
            sys.executable,
        ],
        env={**os.environ, **home.env},
        stdout=log,
        stderr=subprocess.STDOUT,
    )


def test_a_try_killed_by_the_memory_limit_says_so(sqlite_home):
    sqlite_home.configure(core={"parallelism": "2"})
    sqlite_home.write_dag(
        "greedy_task.py",
        """
from datetime import datetime
from flowsched import DAG, PythonOperator
def eat():
    return len(b"x" * (2 * 1024 ** 3))
with DAG("greedy_task", schedule=None, start_date=datetime(2026, 1, 1)) as dag:
    PythonOperator(task_id="eat", python_callable=eat)
""",
    )
    parse()
    operations.trigger_dag("greedy_task", run_id="g")
    with child_cgroup("memory") as cgroup:
        (cgroup / "memory.limit_in_bytes").write_text(str(512 * 1024 * 1024))
        scheduler = start_scheduler_in(cgroup, sqlite_home, "greedy.log")
        try:
            wait_for(lambda: run_state("greedy_task", "g") in ("success", "failed"), 90)
        finally:
            scheduler.send_signal(signal.SIGTERM)
            scheduler.wait(60)
    (only,) = tries("greedy_task", "eat")
    assert only.state == "failed"
    assert only.error.startswith("task process was killed by SIGKILL on worker local@")
    assert only.error.endswith(
        "before recording a result (SIGKILL is what the out-of-memory killer sends: "
        "this service may use 512 MiB, MemoryMax)"
    )


QUICK = """
from datetime import datetime
from flowsched import DAG, BashOperator
with DAG("{dag_id}", schedule=None, start_date=datetime(2026, 1, 1)) as dag:
    BashOperator(task_id="t", bash_command="true")
"""


def test_a_try_that_cannot_start_under_the_task_limit_says_so(sqlite_home):
    sqlite_home.configure(core={"parallelism": "1"})
    sqlite_home.write_dag("first.py", QUICK.format(dag_id="first"))
    sqlite_home.write_dag("second.py", QUICK.format(dag_id="second"))
    parse()
    with child_cgroup("pids") as cgroup:
        scheduler = start_scheduler_in(cgroup, sqlite_home, "pids.log")
        try:
            operations.trigger_dag("first", run_id="f")  # everything started once
            wait_for(lambda: run_state("first", "f") == "success", 60)
            # Now not one more process or thread: the next try cannot be forked.
            (cgroup / "pids.max").write_text((cgroup / "pids.current").read_text())
            operations.trigger_dag("second", run_id="s")
            wait_for(lambda: run_state("second", "s") in ("success", "failed"), 60)
        finally:
            (cgroup / "pids.max").write_text("max")
            scheduler.send_signal(signal.SIGTERM)
            scheduler.wait(60)
    (only,) = tries("second", "t")
    assert only.state == "failed"
    assert only.error.startswith(
        "cannot start a process for second.t run=s try=1: this service reached "
    ), only.error
    assert "processes and threads (TasksMax / pids.max)" in only.error


def test_kill_9_of_the_scheduler_takes_its_dag_processor_with_it(sqlite_home):
    sqlite_home.configure(scheduler={"dag_dir_list_interval": "1"})
    sqlite_home.write_dag("quick.py", QUICK.format(dag_id="quick"))
    log = open(sqlite_home.root / "with-processor.log", "wb")  # noqa: SIM115
    scheduler = subprocess.Popen(
        [sys.executable, "-m", "flowsched", "scheduler"],
        env={**os.environ, **sqlite_home.env},
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:

        def processor_running() -> bool:
            for pid in alive(descendants(scheduler.pid)):
                with contextlib.suppress(OSError):
                    if b"dag-processor" in Path(f"/proc/{pid}/cmdline").read_bytes():
                        return True
            return False

        wait_for(processor_running, 60)
        below = descendants(scheduler.pid)
    finally:
        scheduler.kill()
        scheduler.wait(10)
        log.close()
    assert_all_gone(below)


def test_kill_9_of_the_webserver_takes_its_gunicorn_workers_with_it(sqlite_home):
    port = free_port()
    webserver = subprocess.Popen(
        [sys.executable, "-m", "flowsched", "webserver", "--bind", f"127.0.0.1:{port}"],
        env={**os.environ, **sqlite_home.env},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for(lambda: http_status(f"http://127.0.0.1:{port}/api/v1/health") == 200, 90)
        # gunicorn forks its workers one after another: the first may answer while
        # the others are still importing on a loaded machine.
        wait_for(lambda: len(descendants(webserver.pid)) >= 2, 60)
        workers = descendants(webserver.pid)
    finally:
        webserver.kill()
        webserver.wait(10)
    # At once (the parent-death signal), not when a worker notices on its next loop.
    assert_all_gone(workers, 0.5)
