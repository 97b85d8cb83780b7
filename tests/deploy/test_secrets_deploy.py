"""The flowsched role's secrets tasks write a file the file backend reads: real Ansible, real
flowsched, secrets hidden from Ansible's output, idempotent."""

from __future__ import annotations

import grp
import os
import stat
import subprocess

from flowsched import Connection, Variable
from tests.deploy.conftest import HERE, REPO, ansible_env, tool


def _deploy(root, tmp_path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            tool("ansible-playbook"),
            "-i", "localhost,",
            str(HERE / "secrets.yml"),
            "-e", f"secrets_root={root}",
            "-e", f"secrets_group={grp.getgrgid(os.getgid()).gr_name}",
        ],
        cwd=REPO, env=ansible_env(tmp_path), capture_output=True, text=True, timeout=180,
        check=False,
    )  # fmt: skip


def test_role_deploys_secrets_the_file_backend_reads(sqlite_home, tmp_path):
    root = tmp_path / "secrets"
    first = _deploy(root, tmp_path)
    assert first.returncode == 0, first.stdout + first.stderr
    for secret in ("tok-from-vault", "Wh p@ss", "Wh%20p%40ss"):
        assert secret not in first.stdout and secret not in first.stderr  # no_log
    path = root / "secrets.yaml"
    assert stat.S_IMODE(path.stat().st_mode) == 0o640
    assert stat.S_IMODE(root.stat().st_mode) == 0o750
    second = _deploy(root, tmp_path)
    assert "changed=0" in second.stdout, second.stdout  # idempotent

    sqlite_home.configure(secrets={"files_folder": str(root)})
    warehouse = Connection.get("warehouse")
    assert (warehouse.host, warehouse.port, warehouse.password) == (
        "db.internal",
        3306,
        "Wh p@ss/1",
    )
    api = Connection.get("api")
    assert (api.password, api.extra_dejson) == ("tok-from-vault", {"verify": False})
    assert Variable.get("environment") == "production"
    assert Variable.get("limits", deserialize_json=True) == {"rows": 1000}
