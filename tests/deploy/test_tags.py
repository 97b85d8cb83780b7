"""Tags run a part of site.yml and sync-dags.yml: `--tags dags` lists DAG-sync tasks only.

`--list-tasks` shows the tasks a tag selects without contacting a host; the
settings validation is tagged `always` (every part needs it checked first).
"""

from __future__ import annotations

import re

import pytest

from tests.deploy.conftest import HERE, Run, tool

TASK = re.compile(r"^\s{6}(?P<name>\S.*?)\tTAGS: \[(?P<tags>[^\]]*)\]$", re.M)


def listed(run: Run, playbook: str, tags: str) -> list[tuple[str, set[str]]]:
    result = run(
        tool("ansible-playbook"),
        "-i",
        str(HERE / "inventories" / "gmt8"),
        "--list-tasks",
        "--tags",
        tags,
        playbook,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    tasks = [
        (m["name"], {t.strip() for t in m["tags"].split(",") if t.strip()})
        for m in TASK.finditer(result.stdout)
    ]
    assert tasks, result.stdout
    return tasks


@pytest.mark.parametrize("playbook", ["site.yml", "playbooks/sync-dags.yml"])
def test_tags_dags_lists_only_dag_sync_tasks(run: Run, playbook: str) -> None:
    tasks = listed(run, playbook, "dags")
    selected = [name for name, tags in tasks if "always" not in tags]
    assert selected, tasks
    for name, tags in tasks:
        assert "always" in tags or "dags" in tags, f"{name} runs under --tags dags: {tags}"
        assert "always" in tags or not tags & {"install", "config", "service"}, (name, tags)
    assert "dag_sync : Sync and verify the plugin folder" not in selected, selected


def test_each_concern_tag_selects_its_tasks_and_no_dag_sync(run: Run) -> None:
    for tag in ("install", "config", "service"):
        tasks = listed(run, "site.yml", tag)
        selected = [(name, tags) for name, tags in tasks if "always" not in tags]
        assert selected, (tag, tasks)
        assert all(tag in tags for _, tags in selected), (tag, selected)
        assert not [name for name, _ in selected if "DAG" in name], (tag, selected)
