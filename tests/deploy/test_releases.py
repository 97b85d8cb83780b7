"""Release handling of the flowsched role on a local install root: rollback
swaps current and previous, a second switch changes nothing, pruning keeps
current, previous and the newest releases."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from tests.deploy.conftest import HERE, REPO, ansible_env, tool


def play(root: Path, action: str, *extra: str) -> str:
    result = subprocess.run(
        [
            tool("ansible-playbook"),
            "-i", str(HERE / "inventories" / "gmt8"),
            str(HERE / "releases.yml"),
            "-e", f"flowsched_install_root={root}",
            "-e", f"action={action}",
            *extra,
        ],
        cwd=REPO, env=ansible_env(root.parent), capture_output=True, text=True, timeout=120,
        check=False,
    )  # fmt: skip
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    return output


@pytest.fixture
def root(tmp_path: Path) -> Path:
    root = tmp_path / "opt-flowsched"
    for age, version in enumerate(["1.0", "2.0", "3.0", "4.0"]):
        for folder in ("releases", "wheelhouse"):
            (root / folder / version).mkdir(parents=True)
            stamp = 1_700_000_000 + age * 3600
            os.utime(root / folder / version, (stamp, stamp))
    (root / "current").symlink_to(root / "releases" / "3.0")
    (root / "previous").symlink_to(root / "releases" / "2.0")
    return root


def target(root: Path, link: str) -> str:
    return Path(os.readlink(root / link)).name


def test_rollback_swaps_and_rolls_forward(root: Path) -> None:
    output = play(root, "rollback")
    assert (target(root, "current"), target(root, "previous")) == ("2.0", "3.0")
    assert "restart_required=True" in output
    play(root, "rollback")
    assert (target(root, "current"), target(root, "previous")) == ("3.0", "2.0")


def test_switch_to_the_current_release_changes_nothing(root: Path) -> None:
    output = play(root, "switch", "-e", f"flowsched_switch_to={root}/releases/3.0")
    assert "restart_required=False" in output
    assert "changed=0" in output
    assert (target(root, "current"), target(root, "previous")) == ("3.0", "2.0")


def test_prune_keeps_current_previous_and_the_newest(root: Path) -> None:
    # 1.0 is the oldest and neither current nor previous: the only one removed
    # with two releases kept (4.0 is the newest, current 3.0 and previous 2.0 stay).
    play(root, "prune", "-e", "flowsched_keep_releases=2", "-e", "flowsched_release_version=4.0")
    assert sorted(p.name for p in (root / "releases").iterdir()) == ["2.0", "3.0", "4.0"]
    assert sorted(p.name for p in (root / "wheelhouse").iterdir()) == ["2.0", "3.0", "4.0"]
