"""A sync between queueing and running fails nothing: the worker runs the kept release.

The folders are laid out as roles/dag_sync lays them out on a host:
``<root>/releases/<time>-<id>/`` and a ``current`` symlink that the
settings point at.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from flowsched import operations
from flowsched.lifecycle import Workload
from flowsched.scheduler.loop import Scheduler
from tests.harness import LocalExecutor, drive, parse, run_finished, ti_states, tries
from tests.test_plugins import DAG as PLUGIN_DAG
from tests.test_plugins import PLUGIN

MARKER_DAG = """
from datetime import datetime
from flowsched import DAG
from flowsched.operators.bash import BashOperator

with DAG("synced", schedule=None, start_date=datetime(2026, 1, 1)):
    BashOperator(task_id="t", bash_command="echo release-{marker}")
"""


def release(root: Path, name: str, files: dict[str, str]) -> Path:
    """A complete release folder, and `current` swapped to it (atomic rename)."""
    folder = root / "releases" / name
    folder.mkdir(parents=True)
    for relative, text in files.items():
        (folder / relative).write_text(text)
    link = root / "current.new"
    link.symlink_to(folder)
    link.rename(root / "current")
    return folder


def queue_then(swap, dag_id: str) -> None:
    """Queue the DAG's first task, call ``swap()`` (the sync), then let the try run."""
    with Scheduler(LocalExecutor(1), run_dag_processor=False) as scheduler:
        scheduler.start_queued_runs()
        workloads: list[Workload] = scheduler.schedule_runs()
        assert workloads, "nothing was queued"
        swap()
        for workload in workloads:
            scheduler.executor.queue(workload)
        deadline = 120
        while any(state in ("queued", "running") for state, _ in ti_states(dag_id).values()):
            scheduler.executor.wakeup.wait(0.2)
            scheduler.run_once()
            deadline -= 0.2
            assert deadline > 0, f"{dag_id} did not finish"


def try_log(home, dag_id: str, run_id: str = "*") -> str:
    folder = home.logs / f"dag_id={dag_id}"
    return next(folder.glob(f"run_id={run_id}/*/attempt=1.log")).read_text()


FIRST = "20260101T000000Z-aaaaaaaaaaaa"


def use_releases(home, folder: str, files: dict[str, str]) -> Path:
    """Point the ``dags`` or ``plugins`` setting at a first release holding ``files``."""
    root = home.root / f"{folder}-root"
    release(root, FIRST, files)
    home.configure(core={f"{folder}_folder": str(root / "current")})
    return root


def test_a_try_queued_before_a_dag_sync_runs_the_kept_release(home):
    root = use_releases(home, "dags", {"synced.py": MARKER_DAG.format(marker="one")})
    parse()
    operations.trigger_dag("synced", run_id="r1")
    queue_then(
        lambda: release(
            root, "20260101T000100Z-bbbbbbbbbbbb", {"synced.py": MARKER_DAG.format(marker="two")}
        ),
        "synced",
    )
    (try_,) = tries("synced", "t")
    assert (try_.state, try_.error) == ("success", None)
    assert "release-one" in try_log(home, "synced")

    # The next run takes the new release.
    parse()
    operations.trigger_dag("synced", run_id="r2")
    drive(run_finished("synced", "r2"))
    assert [t.state for t in tries("synced", "t")] == ["success", "success"]
    assert "release-two" in try_log(home, "synced", "r2")


def test_a_dag_file_in_no_kept_release_is_refused_naming_them(home):
    root = use_releases(home, "dags", {"synced.py": MARKER_DAG.format(marker="one")})
    parse()
    operations.trigger_dag("synced", run_id="r1")

    def sync_twice_and_prune() -> None:
        for minute, marker in (("01", "two"), ("02", "three")):
            release(
                root,
                f"20260101T00{minute}00Z-{marker * 4}",
                {"synced.py": MARKER_DAG.format(marker=marker)},
            )
        shutil.rmtree(root / "releases" / FIRST)

    queue_then(sync_twice_and_prune, "synced")
    (try_,) = tries("synced", "t")
    assert try_.state == "failed"
    assert "dag file differs on worker" in try_.error
    assert "none of the 2 kept releases has it" in try_.error
    assert "release-" not in try_log(home, "synced")  # no copy of the code ran


def test_a_try_queued_before_a_plugin_sync_runs_the_kept_plugin_release(home):
    old = PLUGIN.read_text()
    root = use_releases(home, "plugins", {PLUGIN.name: old})
    shutil.copy(PLUGIN_DAG, home.dags / PLUGIN_DAG.name)
    parse()
    operations.trigger_dag("example_plugin", run_id="p1")
    new = {PLUGIN.name: old.replace('"Hello"', '"Bonjour"')}
    queue_then(lambda: release(root, "20260101T000100Z-bbbbbbbbbbbb", new), "example_plugin")
    (try_,) = tries("example_plugin", "greet")
    assert (try_.state, try_.error) == ("success", None)
    log = try_log(home, "example_plugin")
    assert "Hello, EXAMPLE_PLUGIN!" in log and "Bonjour" not in log
