"""molecule/run-ci cannot hang a CI run: a stage past its deadline is killed with
everything it started, named with the Ansible task and the hosts it waited for,
tried once more on fresh hosts, and the retry is reported.

The real script runs in a copy of the repository's layout whose ``molecule`` and
``scripts/nspawn-hosts`` are stand-ins (the lab itself is exercised by the
molecule scenarios): what is tested here is run-ci's own bookkeeping, with its
real deadlines, cgroups and summary.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from flowsched.processes import process_table

REPO = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="run-ci needs root (cgroups, as in CI)")

# A converge that prints an Ansible task, gets an answer from one host and then
# waits forever for the other, with a grandchild that would outlive a plain kill.
FAKE_MOLECULE = """#!/usr/bin/env bash
stage=$1 scenario=$3
count_file="$FAKE_STATE/$scenario-$stage.count"
n=$(( $(cat "$count_file" 2>/dev/null || echo 0) + 1 ))
echo "$n" >"$count_file"
echo "molecule $stage try $n"
echo "$scenario $stage start $(date +%s.%N)" >>"$FAKE_STATE/timeline"
if [[ $scenario == fake && $stage == converge && $n -le $FAKE_HANGS ]]; then
    echo "TASK [flowsched_common : Refresh the package lists] ****"
    echo "ok: [fs-one]"
    setsid sleep 1000 &
    echo $! >>"$FAKE_STATE/sleepers"
    sleep 1000
fi
[[ $stage == converge ]] && sleep 2
echo "$scenario $stage end $(date +%s.%N)" >>"$FAKE_STATE/timeline"
exit 0
"""

FAKE_TOOL = """#!/usr/bin/env bash
case $1 in
    leftovers|check|image|ssh|journal) exit 0 ;;
    status) echo "HOST STATE"; echo "fs-one running"; echo "fs-two running" ;;
esac
"""


def _fake_repo(tmp_path: Path) -> Path:
    """Scenario "fake" (hosts fs-one, fs-two) stalls as told; "other" (fs-three) does not."""
    repo = tmp_path / "repo"
    (repo / "scripts").mkdir(parents=True)
    (repo / "molecule").mkdir()
    shutil.copy(REPO / "molecule" / "run-ci", repo / "molecule" / "run-ci")
    for scenario, hosts in (("fake", ["fs-one", "fs-two"]), ("other", ["fs-three"])):
        (repo / "molecule" / scenario).mkdir()
        platforms = "".join(f"  - name: {host}\n" for host in hosts)
        (repo / "molecule" / scenario / "molecule.yml").write_text(
            f"platforms:\n{platforms}provisioner:\n  inventory:\n    links:\n"
            "      hosts: hosts.yml\n"
        )
        (repo / "molecule" / scenario / "hosts.yml").write_text(
            f"all:\n  vars:\n    flowsched_lab_name: {scenario}\n"
            f"    flowsched_lab_bridge: {scenario}0\n"
        )
    for path, text in (
        (repo / "scripts" / "nspawn-hosts", FAKE_TOOL),
        (repo / "scripts" / "lab-wheelhouse", "#!/bin/sh\necho /nonexistent\n"),
        (tmp_path / "bin" / "molecule", FAKE_MOLECULE),
        (tmp_path / "bin" / "ansible-playbook", 'echo "wheelhouse $*" >>"$FAKE_STATE/timeline"'),
    ):
        path.parent.mkdir(exist_ok=True)
        path.write_text(text if text.startswith("#!") else f"#!/bin/sh\n{text}\n")
        path.chmod(0o755)
    return repo


def _run(
    tmp_path: Path, hangs: int, scenarios: tuple[str, ...] = ("fake",)
) -> tuple[subprocess.CompletedProcess[str], float]:
    repo = _fake_repo(tmp_path)
    state = tmp_path / "state"
    state.mkdir()
    env = {
        **os.environ,
        "PATH": f"{tmp_path / 'bin'}:{os.environ['PATH']}",
        "FAKE_STATE": str(state),
        "FAKE_HANGS": str(hangs),
        "RUN_CI_TIMEOUT_CONVERGE": "3",
    }
    started = time.monotonic()
    done = subprocess.run(
        [str(repo / "molecule" / "run-ci"), *scenarios],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    return done, time.monotonic() - started


def _sleepers_gone(tmp_path: Path) -> None:
    for pid in (tmp_path / "state" / "sleepers").read_text().split():
        deadline = time.monotonic() + 10
        while os.path.exists(f"/proc/{pid}") and time.monotonic() < deadline:
            time.sleep(0.1)
        # Its state and parent, if it stayed: a zombie names the process that did not reap it.
        assert not os.path.exists(f"/proc/{pid}"), (
            f"pid {pid} outlived its stage: {process_table().get(int(pid))}"
        )


def test_a_stalled_stage_is_killed_named_and_retried_once_on_fresh_hosts(tmp_path):
    done, took = _run(tmp_path, hangs=1)
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    assert "scenario fake: converge timed out after 3s; killing its processes" in out
    assert (
        "timed out after 3s; stuck in TASK [flowsched_common : Refresh the package lists] "
        "waiting for fs-two"
    ) in out
    assert "scenario fake: converge again on fresh hosts" in out
    assert "ok on RETRY (try 1:" in out
    assert (tmp_path / "state" / "fake-converge.count").read_text().strip() == "2"
    assert took < 90
    _sleepers_gone(tmp_path)


def test_a_stage_that_stalls_twice_fails_the_run_within_its_deadlines(tmp_path):
    done, took = _run(tmp_path, hangs=2)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "FAILED twice (try 1:" in done.stdout
    assert "scenario fake: verify" not in done.stdout  # nothing runs after a failed stage
    logs = done.stdout.split("FAILED; the stages' logs are in ", 1)[1].split()[0]
    shutil.rmtree(logs)
    assert took < 90
    _sleepers_gone(tmp_path)


def test_scenarios_run_side_by_side_after_one_wheelhouse_build_and_report_each(tmp_path):
    done, _ = _run(tmp_path, hangs=0, scenarios=("fake", "other"))
    assert done.returncode == 0, done.stdout + done.stderr
    timeline = (tmp_path / "state" / "timeline").read_text().splitlines()
    # The wheelhouse is built once, before any scenario starts.
    assert timeline[0].startswith("wheelhouse -i ")
    assert "playbooks/build-wheelhouse.yml" in timeline[0]
    assert sum(line.startswith("wheelhouse") for line in timeline) == 1
    # The two converges overlap in time (each takes 2 s).
    times = {
        (scenario, edge): float(at)
        for scenario, stage, edge, at in (line.split() for line in timeline[1:])
        if stage == "converge"
    }
    assert times["fake", "start"] < times["other", "end"]
    assert times["other", "start"] < times["fake", "end"]
    # Each scenario's output and its rows in the summary, in the order asked.
    out = done.stdout
    assert out.index("======== scenario fake") < out.index("======== scenario other")
    summary = out.split("stage timings", 1)[1]
    for scenario in ("fake", "other"):
        for stage in ("create", "converge", "idempotence", "verify"):
            assert re.search(rf"^{scenario} +{stage} +\d+s  ok$", summary, re.M), summary
    assert "all scenarios passed" in out
