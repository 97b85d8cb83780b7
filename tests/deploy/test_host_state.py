"""roles/flowsched/library/flowsched_host_state: the one read that lets a host in sync skip a role.

The module decides whether a role's tasks run at all on a re-run, so a
difference it missed would leave a drifted host as it is. Each kind of
state is checked here through Ansible (the real module path, argument spec
and output), in sync and then drifted; units are checked on the lab's
systemd hosts (a drifted unit is put back by the next run there).
"""

from __future__ import annotations

import grp
import hashlib
import json
import os
import pwd
from pathlib import Path

from tests.deploy.conftest import REPO, Run, tool


def play(run: Run, tmp_path: Path, *tasks: dict, verbose: bool = False):
    """Run the tasks on this machine, with the module's library and Debian's Python (the hosts')."""
    playbook = tmp_path / "play.yml"
    playbook.write_text(
        json.dumps([{"hosts": "localhost", "gather_facts": False, "tasks": list(tasks)}])
    )
    return run(
        tool("ansible-playbook"), "-i", "localhost,", "-c", "local",
        "-e", "ansible_python_interpreter=/usr/bin/python3",
        *(["-vvv"] if verbose else []), str(playbook),
        extra_env={"ANSIBLE_LIBRARY": str(REPO / "roles" / "flowsched" / "library")},
    )  # fmt: skip


def host_state(run: Run, tmp_path: Path, **args: object) -> dict:
    """Run the module with the given arguments; its result, and the run's output."""
    saved = tmp_path / "result.json"
    result = play(
        run, tmp_path,
        {"flowsched_host_state": args, "register": "state"},
        {"ansible.builtin.copy": {"content": "{{ state | to_json }}", "dest": str(saved)}},
        verbose=True,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    state = json.loads(saved.read_text())
    state["output"] = result.stdout
    return state


def test_a_host_as_described_is_in_sync_and_each_drift_is_named(run: Run, tmp_path: Path) -> None:
    root = tmp_path / "host"
    (root / "etc").mkdir(parents=True)
    config = root / "etc" / "app.cfg"
    config.write_text("[core]\nparallelism = 8\n")
    config.chmod(0o640)
    (root / "data").mkdir(mode=0o750)
    (root / "data").chmod(0o750)
    (root / "releases" / "1").mkdir(parents=True)
    (root / "current").symlink_to(root / "releases" / "1")
    (root / "releases" / "1" / "dag.py").write_text("x = 1\n")
    (root / "releases" / "1" / "sub").mkdir()
    (root / "releases" / "1" / "sub" / ".hidden").write_text("h\n")
    (root / "env").write_text("PATH=/usr/bin\nhttp_proxy=http://proxy:3128\n")
    me = pwd.getpwuid(os.getuid())
    group = grp.getgrgid(os.getgid()).gr_name
    sha1 = hashlib.sha1(config.read_bytes()).hexdigest()
    described = {
        "files": [
            {"path": str(config), "sha1": sha1, "owner": me.pw_name, "group": group, "mode": "0640"}
        ],
        "dirs": [{"path": str(root / "data"), "owner": me.pw_name, "mode": "0750"}],
        "links": [{"path": str(root / "current"), "target": str(root / "releases" / "1")}],
        "absent": [str(root / "proxy.conf")],
        "lines": [
            {"path": str(root / "env"), "regexp": "^http_proxy=", "line": "http_proxy=http://proxy:3128"},
            {"path": str(root / "env"), "regexp": "^no_proxy=", "line": None},
        ],
        "trees": [{"path": str(root / "current"), "sha256": {
            "dag.py": hashlib.sha256(b"x = 1\n").hexdigest(),
            "sub/.hidden": hashlib.sha256(b"h\n").hexdigest(),
        }}],
        "counts": [{"path": str(root / "releases"), "max": 1}],
        "packages": ["dpkg"],
        "groups": [group],
        "users": [{"name": me.pw_name, "home": me.pw_dir, "shell": me.pw_shell, "groups": []}],
    }  # fmt: skip

    state = host_state(run, tmp_path, **described)
    assert state["differences"] == [] and state["in_sync"] is True, state["differences"]
    # The checksum of a file (a secrets file's, in the roles) is kept out of the output.
    assert sha1 not in state["output"]

    config.write_text("[core]\nparallelism = 11\n")
    (root / "data").chmod(0o700)
    (root / "releases" / "2").mkdir()
    (root / "current").unlink()
    (root / "current").symlink_to(root / "releases" / "2")
    (root / "releases" / "2" / "dag.py").write_text("x = 2\n")
    (root / "proxy.conf").write_text("proxy\n")
    (root / "env").write_text("http_proxy=http://other:3128\nno_proxy=localhost\n")
    described["packages"] = ["dpkg", "no-such-package-flowsched"]
    described["users"][0]["shell"] = "/usr/sbin/nologin"
    described["groups"] = [group, "no-such-group-flowsched"]

    state = host_state(run, tmp_path, **described)
    assert state["in_sync"] is False
    assert state["differences"] == [
        f"{config}: content differs",
        f"{root / 'data'}: mode 0700, not 0750",
        f"{root / 'current'}: points at {root / 'releases' / '2'}, not {root / 'releases' / '1'}",
        f"{root / 'proxy.conf'}: present",
        f"{root / 'env'}: lines matching '^http_proxy=' are ['http_proxy=http://other:3128'],"
        " not ['http_proxy=http://proxy:3128']",
        f"{root / 'env'}: lines matching '^no_proxy=' are ['no_proxy=localhost'], not []",
        f"{root / 'current'}/dag.py: differs",
        f"{root / 'current'}/sub/.hidden: differs",
        f"{root / 'releases'}: 2 entries, more than 1",
        "package no-such-package-flowsched: not installed",
        "group no-such-group-flowsched: missing",
        f"user {me.pw_name}: shell {me.pw_shell!r}, not '/usr/sbin/nologin'",
    ]


def test_a_missing_path_differs_and_a_bad_mode_is_a_clear_error(run: Run, tmp_path: Path) -> None:
    missing = tmp_path / "nothing"
    state = host_state(
        run, tmp_path,
        files=[{"path": str(missing)}], dirs=[{"path": str(missing)}],
        links=[{"path": str(missing), "target": "/x"}],
        trees=[{"path": str(missing), "sha256": {"a.py": "0" * 64}}],
    )  # fmt: skip
    assert state["differences"] == [
        f"{missing}: missing",
        f"{missing}: missing",
        f"{missing}: missing",
        f"{missing}/a.py: differs",
    ]

    (tmp_path / "file").write_text("x")
    bad = {"files": [{"path": str(tmp_path / "file"), "mode": "u=rw"}]}
    result = play(run, tmp_path, {"flowsched_host_state": bad})
    assert result.returncode != 0
    assert (
        f"{tmp_path / 'file'}: mode 'u=rw' is not an octal string such as '0644'" in result.stdout
    )
