"""Worker rolls: which workers restart and in which batches (flowsched_worker_roll_batch,
a count or a percentage as Ansible's serial), planned by the worker role on sample hosts."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

from tests.deploy.conftest import HERE, Run, tool

WORKERS = [f"w{i}" for i in range(1, 9)]


def inventory(tmp_path: Path) -> Path:
    hosts = {
        "all": {
            "vars": {
                "ansible_connection": "local",
                "ansible_python_interpreter": "{{ ansible_playbook_python }}",
                "flowsched_timezone": "Etc/GMT-8",
                "flowsched_db_password": "db-secret-roll-5d1e8c2a",
                "flowsched_db_migration_password": "db-migration-secret-roll-3c8e1f7a",
                "firewall_control_networks": ["127.0.0.0/8"],
                "flowsched_broker_password": "broker-secret-roll-9b3f7a1c",
                "flowsched_secret_key": "roll-test-key-6f0c2b9e8d7a4153c1e2f3a4b5c6d7e8",
            },
            "children": {
                "flowsched_db": {"hosts": {"db1": {"ansible_host": "10.9.0.1"}}},
                "flowsched_broker": {"hosts": {"db1": None}},
                "flowsched_scheduler": {"hosts": {"db1": None}},
                "flowsched_workers": {
                    "hosts": {w: {"ansible_host": f"10.9.0.{i}"} for i, w in enumerate(WORKERS, 10)}
                },
            },
        }
    }
    path = tmp_path / "hosts.yml"
    path.write_text(yaml.safe_dump(hosts))
    return path


def plan(run: Run, tmp_path: Path, pending: list[str], batch: str) -> list[list[str]]:
    result = run(
        tool("ansible-playbook"),
        "-i", str(inventory(tmp_path)),
        str(HERE / "roll-plan.yml"),
        "-e", f"install_root={tmp_path / 'opt'}",
        "-e", json.dumps({"pending": pending, "flowsched_worker_roll_batch": batch}),
    )  # fmt: skip
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    match = re.search(r'"msg": "BATCHES (.*)"', output)
    assert match, output
    return json.loads(match.group(1).replace('\\"', '"'))


@pytest.mark.parametrize(
    ("batch", "expected"),
    [
        # 25% of the 8 workers of the play: 2 at a time, as serial would.
        ("25%", [["w1", "w3"], ["w4", "w6"], ["w7"]]),
        ("3", [["w1", "w3", "w4"], ["w6", "w7"]]),
        ("1", [["w1"], ["w3"], ["w4"], ["w6"], ["w7"]]),
        # 10% of 8 is 0.8: never less than one worker.
        ("10%", [["w1"], ["w3"], ["w4"], ["w6"], ["w7"]]),
        ("100%", [["w1", "w3", "w4", "w6", "w7"]]),
    ],
)
def test_only_the_workers_to_restart_are_batched(
    run: Run, tmp_path: Path, batch: str, expected: list[list[str]]
) -> None:
    assert plan(run, tmp_path, ["w1", "w3", "w4", "w6", "w7"], batch) == expected


def test_nothing_to_restart_means_no_batch(run: Run, tmp_path: Path) -> None:
    assert plan(run, tmp_path, [], "25%") == []


@pytest.mark.parametrize("batch", ["0", "0%", "150%", "a quarter", "-2"])
def test_a_bad_batch_is_refused_naming_the_variable(run: Run, tmp_path: Path, batch: str) -> None:
    result = run(
        tool("ansible-playbook"),
        "-i", str(inventory(tmp_path)),
        str(HERE / "roll-plan.yml"),
        "-e", f"install_root={tmp_path / 'opt'}",
        "-e", json.dumps({"pending": [], "flowsched_worker_roll_batch": batch}),
    )  # fmt: skip
    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    assert "flowsched_worker_roll_batch as a count >= 1 or a percentage" in output, output
    assert f"(got {batch})" in output, output
