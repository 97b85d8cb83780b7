"""Deployment at fleet sizes: the lab with N worker hosts, deployed and operated.

For each N (default 5, 10 and 20) this boots the lab with N workers
(``scripts/lab up --workers N``: systemd-nspawn hosts on this machine) and
measures, in seconds:

* **first converge**: ``site.yml`` on fresh hosts (from scripts/lab's log;
  the source's wheelhouse is built before, outside the timing);
* **idempotent re-run**: ``site.yml`` again (must report changed=0);
* **DAG sync**: ``playbooks/sync-dags.yml`` with one DAG file changed;
* **rolling upgrade**: ``playbooks/upgrade.yml`` to a new version, workers
  25% at a time, while a run of ``lab_fleet`` (40 tasks on the default
  queue) goes on; then the run's failed tries are counted (must be 0). The
  new version's wheelhouse is built first, outside the timing, as an
  operator's CI would.

It also measures what the controller pushes: the wheelhouse and DAG
tarball sizes times the application hosts, and the time of one push of the
new wheelhouse to every application host (``push wheelhouse``, the copy
step of an upgrade on its own). The smallest N is the baseline: each figure
is printed with its ratio to the baseline's and the ratio of host counts, so
sub-linear growth reads directly, and with the machine's 1-minute load
average at the end of the step (the lab shares this machine's cores with
whatever else runs). Figures are printed, never asserted.

Run by hand as root, never in CI; it waits for and holds the shared lab's
lock (/tmp/flowsched-lab.lock) while it runs, so run one size per
invocation to let others use the lab in between:

    .venv/bin/python bench/fleet_bench.py --workers 5 [--seconds 60]

Each size's figures are kept in bench/results/fleet.json (replaced when the
size is measured again), and the table printed at the end holds every size
measured so far. Each run's full output goes to bench/results/fleet-N.log.
The lab is taken down after each N, also on failure.
"""

from __future__ import annotations

import argparse
import fcntl
import functools
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LAB = ROOT / "scripts" / "lab"
INVENTORY = ROOT / ".lab-scale"
RESULTS = ROOT / "bench" / "results"
APP_HOSTS = "flowsched_scheduler:flowsched_webserver:flowsched_workers:flowsched_flower"
CLI = ["/usr/local/sbin/flowsched-run", "flowsched"]
STEP_TIMEOUT = 3600


@dataclass
class Figures:
    workers: int
    seconds: dict[str, float] = field(default_factory=dict)
    load: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def record(self, name: str, seconds: float) -> None:
        """A step's time, beside the load the machine was under at its end."""
        self.seconds[name] = seconds
        self.load[name] = os.getloadavg()[0]
        print(f"[fleet_bench] {self.workers} workers: {name} {seconds:.0f}s"
              f" (load {self.load[name]:.1f})", flush=True)  # fmt: skip


def env() -> dict[str, str]:
    values = dict(os.environ)
    values["PATH"] = f"{ROOT / '.venv' / 'bin'}{os.pathsep}{values.get('PATH', '')}"
    values["ANSIBLE_CONFIG"] = str(ROOT / "ansible.cfg")
    values.setdefault("FLOWSCHED_LAB_BUILD_DIR", lab_build_dir())
    return values


@functools.cache
def lab_build_dir() -> str:
    """Asked once: scripts/lab-wheelhouse digests the whole source tree."""
    return subprocess.run(
        [str(ROOT / "scripts" / "lab-wheelhouse")],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    ).stdout.strip()


LOG: list[Path] = []


def run(args: list[str], *, timeout: float = STEP_TIMEOUT) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        args, cwd=ROOT, env=env(), capture_output=True, text=True, timeout=timeout, check=False
    )
    if LOG:
        with LOG[0].open("a") as log:
            log.write(f"$ {shlex.join(args)}\n{result.stdout}{result.stderr}\n")
    if result.returncode != 0:
        tail = "\n".join((result.stdout + result.stderr).splitlines()[-40:])
        raise RuntimeError(f"{' '.join(args[:4])}... failed ({result.returncode}):\n{tail}")
    return result


def playbook(path: str, *extra: str) -> tuple[float, str]:
    started = time.monotonic()
    result = run(["ansible-playbook", "-i", str(INVENTORY), str(ROOT / path), *extra])
    return time.monotonic() - started, result.stdout


def on_scheduler(*args: str) -> str:
    command = shlex.join(CLI + list(args))
    result = run(
        ["ansible", "-i", str(INVENTORY), "fs-sched", "-b", "-m", "command", "-a", command],
        timeout=120,
    )
    return result.stdout


def changed_total(recap: str) -> int:
    return sum(int(n) for n in re.findall(r"changed=(\d+)", recap.split("PLAY RECAP")[-1]))


def size(path: Path) -> int:
    return path.stat().st_size if path.is_file() else 0


def new_version_source(tmp: Path) -> tuple[Path, str]:
    """A copy of the package source with its version bumped (as the lab's upgrade verify)."""
    source = tmp / "src"
    subprocess.run(
        ["rsync", "-a", "--exclude=/.git", "--exclude=/.venv", "--exclude=*.egg-info",
         "--exclude=/build", "--exclude=/molecule", "--exclude=/tests", "--exclude=/bench",
         f"{ROOT}/", f"{source}/"],
        check=True, timeout=300,
    )  # fmt: skip
    init = source / "flowsched" / "__init__.py"
    text = init.read_text()
    old = re.search(r'^__version__ = "([^"]+)"', text, re.M)
    assert old, init
    version = f"{old.group(1)}.post1{time.strftime('%H%M%S', time.gmtime())}"
    init.write_text(text.replace(old.group(0), f'__version__ = "{version}"'))
    return source, version


FINISHED = {"success", "failed", "upstream_failed", "skipped"}


def task_rows(states: str) -> list[list[str]]:
    """The task rows of `flowsched tasks states` (task_id, state, try, ...)."""
    return [line.split() for line in states.splitlines() if re.match(r"^t_\d+\s", line)]


def wait_run(dag_id: str, run_id: str, deadline: float) -> list[list[str]]:
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        rows = task_rows(on_scheduler("tasks", "states", dag_id, run_id))
        if rows and all(row[1] in FINISHED for row in rows):
            return rows
        time.sleep(10)
    raise RuntimeError(f"{dag_id} {run_id} did not finish within {deadline}s")


def measure(workers: int, task_seconds: int) -> Figures:
    figures = Figures(workers)
    # This source's wheelhouse is built before the timing (once per source;
    # later sizes reuse it), so that the first converge is the same work at
    # every size.
    run(["ansible-playbook", "-i", str(ROOT / "inventories" / "lab"),
         str(ROOT / "playbooks" / "build-wheelhouse.yml")])  # fmt: skip
    up = run([str(LAB), "up", "--workers", str(workers)])
    converge = re.search(r"deploy with site\.yml: done in (\d+)s", up.stdout + up.stderr)
    figures.record("first converge", float(converge.group(1)) if converge else float("nan"))

    took, out = playbook("site.yml")
    figures.record("idempotent re-run", took)
    if changed_total(out):
        figures.notes.append(f"re-run reported changed={changed_total(out)}")

    with tempfile.TemporaryDirectory(prefix="fleet-bench-") as name:
        tmp = Path(name)
        dags = tmp / "dags"
        shutil.copytree(ROOT / "molecule" / "shared" / "dags", dags)
        with (dags / "lab_routed.py").open("a") as f:
            f.write(f"# changed by fleet_bench at {time.time()}\n")
        took, _ = playbook("playbooks/sync-dags.yml", "-e", f"dag_sync_dags_src={dags}")
        figures.record("DAG sync (1 file)", took)
        tarballs = sorted((Path.home() / ".cache/flowsched/dag-releases").glob("dags-*.tar.gz"))
        dag_tarball = size(max(tarballs, key=lambda p: p.stat().st_mtime)) if tarballs else 0

        source, version = new_version_source(tmp)
        playbook("playbooks/build-wheelhouse.yml", "-e", f"flowsched_source_dir={source}")
        wheelhouse = max(
            Path(env()["FLOWSCHED_LAB_BUILD_DIR"]).glob(f"*{version}*.tar"),
            key=lambda p: p.stat().st_mtime,
            default=None,
        )
        if wheelhouse:
            figures.record("push wheelhouse", push(wheelhouse))
        run_id = f"fleet-{workers}-{int(time.time())}"
        on_scheduler("dags", "unpause", "lab_fleet")
        on_scheduler(
            "dags", "trigger", "lab_fleet", "--run-id", run_id,
            "--conf", f'{{"seconds": {task_seconds}}}',
        )  # fmt: skip
        time.sleep(15)  # the first tries start before the roll does
        took, _ = playbook(
            "playbooks/upgrade.yml",
            "-e", f"flowsched_source_dir={source}",
            "-e", "flowsched_worker_roll_batch=25%",
        )  # fmt: skip
        figures.record("rolling upgrade 25%", took)
        rows = wait_run("lab_fleet", run_id, deadline=1800)
        failed = [row for row in rows if row[1:3] != ["success", "1"]]
        hosts = {row[4] for row in rows}
        figures.notes.append(
            f"upgrade under load: {len(rows)} tasks on {len(hosts)} hosts,"
            f" {len(failed)} not first-try successes"
            + "".join(f"\n    {' '.join(row)}" for row in failed)
        )
        figures.notes.append(
            f"pushed by the controller: wheelhouse {size(wheelhouse) / 1e6:.1f} MB"
            f" x {workers + 1} app hosts = {size(wheelhouse) * (workers + 1) / 1e6:.0f} MB;"
            f" DAG tarball {dag_tarball / 1e3:.1f} kB x {workers + 1}"
            if wheelhouse
            else "wheelhouse tarball not found"
        )
    return figures


def push(wheelhouse: Path) -> float:
    """One copy of the wheelhouse to every application host, as an upgrade's
    unarchive makes it (the controller sends the file to each host), then
    removed again: the time the controller's own link and CPU spend pushing."""
    target = "/var/tmp/fleet-bench-wheelhouse.tar"
    started = time.monotonic()
    run(["ansible", "-i", str(INVENTORY), APP_HOSTS, "-b", "-m", "ansible.builtin.copy",
         "-a", f"src={wheelhouse} dest={target} mode=0600"])  # fmt: skip
    took = time.monotonic() - started
    run(["ansible", "-i", str(INVENTORY), APP_HOSTS, "-b", "-m", "ansible.builtin.file",
         "-a", f"path={target} state=absent"])  # fmt: skip
    return took


def save(figures: Figures) -> list[Figures]:
    """Every size measured so far (this one replacing an earlier one of its size)."""
    path = RESULTS / "fleet.json"
    saved = json.loads(path.read_text()) if path.is_file() else {}
    saved[str(figures.workers)] = figures.__dict__
    path.write_text(json.dumps(saved, indent=2))
    return [Figures(**saved[key]) for key in sorted(saved, key=int)]


def report(all_figures: list[Figures]) -> None:
    """A table, hosts x operation, each figure beside its ratio to the baseline's."""
    base = all_figures[0]
    print(
        f"\nseconds (ratio to {base.workers} workers' figure; load average at the step's end);"
        " hosts ratio in the header"
    )
    print(
        f"{'operation':<22}"
        + "".join(f"{f'{f.workers} w ({f.workers / base.workers:.0f}x)':>24}" for f in all_figures)
    )
    for name in base.seconds:
        cells = []
        for figures in all_figures:
            value = figures.seconds.get(name, float("nan"))
            load = figures.load.get(name, float("nan"))
            cell = f"{value:.0f} ({value / base.seconds[name]:.2f}; load {load:.1f})"
            cells.append(f"{cell:>24}")
        print(f"{name:<22}" + "".join(cells))
    for figures in all_figures:
        for note in figures.notes:
            print(f"[{figures.workers} workers] {note}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workers", type=int, nargs="+", default=[5, 10, 20])
    parser.add_argument("--seconds", type=int, default=60, help="work time of each load task")
    args = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("fleet_bench needs root (it boots the lab)")
    lock = open("/tmp/flowsched-lab.lock", "a")  # noqa: SIM115 (held until exit)
    fcntl.flock(lock, fcntl.LOCK_EX)
    RESULTS.mkdir(parents=True, exist_ok=True)
    results: list[Figures] = []
    for workers in sorted(args.workers):
        print(f"[fleet_bench] {workers} workers ...", flush=True)
        LOG[:] = [RESULTS / f"fleet-{workers}.log"]
        LOG[0].write_text("")
        try:
            results = save(measure(workers, args.seconds))
        finally:
            subprocess.run([str(LAB), "down"], cwd=ROOT, env=env(), timeout=900, check=False)
    report(results)


if __name__ == "__main__":
    main()
