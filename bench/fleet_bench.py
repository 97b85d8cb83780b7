"""Deployment at fleet sizes: the lab with N worker hosts, deployed and operated.

For each N (default 5, 10 and 20) this boots the lab with N workers
(``scripts/lab up --workers N``: systemd-nspawn hosts on this machine) and
measures, in seconds:

* **first converge**: ``site.yml`` on fresh hosts (from scripts/lab's log);
* **idempotent re-run**: ``site.yml`` again (must report changed=0);
* **DAG sync**: ``playbooks/sync-dags.yml`` with one DAG file changed;
* **rolling upgrade**: ``playbooks/upgrade.yml`` to a new version, workers
  25% at a time, while a run of ``lab_fleet`` (40 tasks on the default
  queue) goes on; then the run's failed tries are counted (must be 0). The
  new version's wheelhouse is built first, outside the timing, as an
  operator's CI would.

It also prints what the controller pushes (wheelhouse and DAG tarball
sizes, times the hosts). The smallest N is the baseline: each figure is
printed with its ratio to the baseline's and the ratio of host counts, so
sub-linear growth reads directly. Figures are printed, never asserted.

Run by hand as root, never in CI; it waits for and holds the shared lab's
lock (/tmp/flowsched-lab.lock) while it runs:

    .venv/bin/python bench/fleet_bench.py [--workers 5 10 20] [--seconds 60]

The lab is taken down after each N, also on failure.
"""

from __future__ import annotations

import argparse
import fcntl
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
CLI = ["/usr/local/sbin/flowsched-run", "flowsched"]
STEP_TIMEOUT = 3600


@dataclass
class Figures:
    workers: int
    seconds: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def env() -> dict[str, str]:
    values = dict(os.environ)
    values["PATH"] = f"{ROOT / '.venv' / 'bin'}{os.pathsep}{values.get('PATH', '')}"
    values["ANSIBLE_CONFIG"] = str(ROOT / "ansible.cfg")
    values.setdefault("FLOWSCHED_LAB_BUILD_DIR", lab_build_dir())
    return values


def lab_build_dir() -> str:
    return subprocess.run(
        [str(ROOT / "scripts" / "lab-wheelhouse")],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    ).stdout.strip()


def run(args: list[str], *, timeout: float = STEP_TIMEOUT) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        args, cwd=ROOT, env=env(), capture_output=True, text=True, timeout=timeout, check=False
    )
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


def wait_run(dag_id: str, run_id: str, deadline: float) -> str:
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        states = on_scheduler("tasks", "states", dag_id, run_id)
        if not re.search(r"\s(queued|running|scheduled|up_for_retry|none)\s", states):
            return states
        time.sleep(10)
    raise RuntimeError(f"{dag_id} {run_id} did not finish within {deadline}s")


def measure(workers: int, task_seconds: int) -> Figures:
    figures = Figures(workers)
    up = run([str(LAB), "up", "--workers", str(workers)])
    converge = re.search(r"deploy with site\.yml: done in (\d+)s", up.stdout + up.stderr)
    figures.seconds["first converge"] = float(converge.group(1)) if converge else float("nan")

    took, out = playbook("site.yml")
    figures.seconds["idempotent re-run"] = took
    if changed_total(out):
        figures.notes.append(f"re-run reported changed={changed_total(out)}")

    with tempfile.TemporaryDirectory(prefix="fleet-bench-") as name:
        tmp = Path(name)
        dags = tmp / "dags"
        shutil.copytree(ROOT / "molecule" / "shared" / "dags", dags)
        with (dags / "lab_routed.py").open("a") as f:
            f.write(f"# changed by fleet_bench at {time.time()}\n")
        took, _ = playbook("playbooks/sync-dags.yml", "-e", f"dag_sync_dags_src={dags}")
        figures.seconds["DAG sync (1 file)"] = took
        tarballs = sorted((Path.home() / ".cache/flowsched/dag-releases").glob("dags-*.tar.gz"))
        dag_tarball = size(max(tarballs, key=lambda p: p.stat().st_mtime)) if tarballs else 0

        source, version = new_version_source(tmp)
        playbook("bench/fleet_build.yml", "-e", f"flowsched_source_dir={source}")
        wheelhouse = max(
            Path(env()["FLOWSCHED_LAB_BUILD_DIR"]).glob(f"*{version}*.tar"),
            key=lambda p: p.stat().st_mtime,
            default=None,
        )
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
        figures.seconds["rolling upgrade 25%"] = took
        states = wait_run("lab_fleet", run_id, deadline=1800)
        rows = [line for line in states.splitlines() if re.match(r"^t_\d+\s", line)]
        failed = [line for line in rows if not re.match(r"^t_\d+\s+success\s+1\s", line)]
        figures.notes.append(
            f"upgrade under load: {len(rows)} tasks, {len(failed)} not first-try successes"
        )
        figures.notes.append(
            f"pushed by the controller: wheelhouse {size(wheelhouse) / 1e6:.1f} MB"
            f" x {workers + 1} app hosts = {size(wheelhouse) * (workers + 1) / 1e6:.0f} MB;"
            f" DAG tarball {dag_tarball / 1e3:.1f} kB x {workers + 1}"
            if wheelhouse
            else "wheelhouse tarball not found"
        )
    return figures


def report(all_figures: list[Figures]) -> None:
    """A table, hosts x operation, each figure beside its ratio to the baseline's."""
    base = all_figures[0]
    print(f"\nseconds (ratio to {base.workers} workers; hosts ratio in the header)")
    print(
        f"{'operation':<22}"
        + "".join(f"{f'{f.workers} w ({f.workers / base.workers:.0f}x)':>18}" for f in all_figures)
    )
    for name in base.seconds:
        cells = []
        for figures in all_figures:
            value = figures.seconds.get(name, float("nan"))
            cells.append(f"{f'{value:.0f} ({value / base.seconds[name]:.2f})':>18}")
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
    results = []
    for workers in sorted(args.workers):
        print(f"[fleet_bench] {workers} workers ...", flush=True)
        try:
            results.append(measure(workers, args.seconds))
            print(f"[fleet_bench] {workers} workers: {results[-1].seconds}", flush=True)
        finally:
            subprocess.run([str(LAB), "down"], cwd=ROOT, env=env(), timeout=900, check=False)
    report(results)


if __name__ == "__main__":
    main()
