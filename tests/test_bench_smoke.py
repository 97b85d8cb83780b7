"""Every benchmark but fleet_bench (the nspawn lab), run at its smallest sizes so that
the benchmarks cannot rot unnoticed: each must exit 0 and print its figure lines.

Only that they ran and reported is asserted, never a figure (speed is read from the
benchmarks' own output, beside their baselines). Each starts its own servers
(MariaDB, Redis) where it needs them, as when run by hand.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
NUMBER = r"[0-9][0-9.,]*"

# script -> (smallest arguments, lines its output must have: one regex each)
BENCHES: dict[str, tuple[list[str], list[str]]] = {
    "core_bench.py": (
        [
            "--backend",
            "sqlite",
            "--parallelism",
            "2",
            "--chain",
            "3",
            "--fan",
            "3",
            "--files",
            "3",
        ],
        [
            rf"^\[sqlite\] chain of 3: {NUMBER}s, {NUMBER} tasks/s, end->downstream start "
            rf"median {NUMBER} ms, p95 {NUMBER} ms$",
            rf"^\[sqlite\] fan-out of 3: {NUMBER}s, {NUMBER} tasks/s, root end->task start "
            rf"median {NUMBER} ms, p95 {NUMBER} ms$",
            rf"^\[sqlite\]   per try: {NUMBER} CPU ms \(executor processes\), {NUMBER} round trips",
            rf"^\[sqlite\] mapped over 3 .*: {NUMBER}s, {NUMBER} tasks/s \(success\) beside",
            rf"^\[sqlite\] parsing 3 DAG files: {NUMBER}s \({NUMBER} files/s, 0 errors\)$",
        ],
    ),
    "scheduler_bench.py": (
        ["--backend", "sqlite", "--fan", "20", "--small", "5", "--history", "50", "--slots", "8"],
        [
            rf"^\[sqlite\] scheduler, fan-out of 20 .*: 21 tries in {NUMBER}s = {NUMBER} tries/s",
            rf"^\[sqlite\]   {NUMBER} round trips per try",
            rf"^\[sqlite\] history +{NUMBER} task instances .*idle pass median {NUMBER} ms",
        ],
    ),
    "dag_processing_bench.py": (
        ["--cold", "3", "--files", "5", "--timeout", "60"],
        [
            rf"^cold parse of 3 DAG files: {NUMBER}s \({NUMBER} files/s, 3 DAGs, 0 errors\)$",
            rf"^5 DAG files: first pass of the dag-processor took in all in {NUMBER}s$",
            rf"^one edited file among 5: live in {NUMBER}s$",
        ],
    ),
    "metrics_bench.py": (
        ["--fan", "3", "--parallelism", "2"],
        [
            rf"^fan-out of 3 .*: metrics off {NUMBER} tasks/s \(baseline\), on {NUMBER} tasks/s",
            rf"^one read of the cluster figures .*: first {NUMBER} ms, then median {NUMBER} ms$",
        ],
    ),
    "web_bench.py": (
        ["--backend", "sqlite", "--requests", "1", "--dags", "20", "--big-runs", "3"],
        [
            rf"^\[sqlite\] loaded 21 DAGs, {NUMBER} task instances in {NUMBER}s$",
            r"^sqlite: render time per page \(1 requests each\)$",
            rf"^  DAGs page 1 +{NUMBER} +{NUMBER} +{NUMBER}$",
            rf"^  grid, 5 tasks +{NUMBER} +{NUMBER} +{NUMBER}$",
            rf"^  API taskDurations, .* +{NUMBER} +{NUMBER} +{NUMBER}$",
        ],
    ),
    "celery_bench.py": (
        ["--chain", "3", "--fan", "3", "--concurrency", "1"],
        [
            rf"^\[flowsched\] chain of 3: success in {NUMBER}s, {NUMBER} tasks/s",
            rf"^\[raw celery\] chain of 3: {NUMBER}s, {NUMBER} tasks/s; flowsched/raw = {NUMBER}x",
            rf"^\[flowsched\] fan-out of 3: success in {NUMBER}s, {NUMBER} tasks/s",
            rf"^\[raw celery\] fan-out of 3: {NUMBER}s, {NUMBER} tasks/s; flowsched/raw = ",
            rf"^\[flowsched\] worker CPU per try .*: {NUMBER} ms$",
        ],
    ),
    "fork_bench.py": (
        ["--forks", "5", "--pages", "50"],
        [
            rf"^forking process: {NUMBER} MB resident",
            rf"^fork \+ exit, nothing run: child {NUMBER} ms CPU, parent {NUMBER} ms CPU, "
            rf"{NUMBER} ms wall \(5 forks\)$",
            rf"^copy-on-write: -?{NUMBER} us per page written after the fork",
        ],
    ),
    "sensors_bench.py": (
        ["--sensors", "3", "--others", "2", "--poke-interval", "1"],
        [
            rf"^all 3 sensors poked once and waiting: {NUMBER}s$",
            rf"^chain of 2 no-op tasks alone \(baseline\): {NUMBER}s in all; each task waited ",
            rf"^chain of 2 no-op tasks beside the sensors: {NUMBER}s in all; each task waited ",
            rf"^sensors released: run success {NUMBER}s after the file appeared$",
        ],
    ),
}


def test_every_benchmark_but_the_fleets_is_covered() -> None:
    scripts = {path.name for path in (REPO / "bench").glob("*_bench.py")}
    assert scripts - {"fleet_bench.py"} == set(BENCHES)


@pytest.mark.parametrize("script", BENCHES)
def test_benchmark_runs_at_its_smallest_sizes_and_prints_its_figures(script: str) -> None:
    args, expected = BENCHES[script]
    result = subprocess.run(
        [sys.executable, str(REPO / "bench" / script), *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-4000:]
    missing = [line for line in expected if not re.search(line, result.stdout, re.M)]
    assert not missing, f"{script} did not print {missing}:\n{result.stdout[-4000:]}"
