"""The dag_sync role, run for real on folders standing for two worker hosts:
atomic content-named releases, idempotence, verification, repair, pruning."""

from __future__ import annotations

import hashlib
import io
import re
import subprocess
import tarfile
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.deploy.conftest import HERE, REPO, ansible_env, tool

HOSTS = ["worker1", "worker2"]


@dataclass
class Sync:
    root: Path
    dags: Path
    plugins: Path

    def run(self, *extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [
                tool("ansible-playbook"), *extra,
                "-i", str(HERE / "inventories" / "gmt8"),
                str(HERE / "dag-sync.yml"),
                "-e", f"sync_root={self.root}",
                "-e", f"dags_src={self.dags}",
                "-e", f"plugins_src={self.plugins}",
            ],
            cwd=REPO, env=ansible_env(self.root), capture_output=True, text=True, timeout=600,
            check=False,
        )  # fmt: skip

    def ok(self, *extra: str) -> str:
        result = self.run(*extra)
        output = result.stdout + result.stderr
        assert result.returncode == 0, output
        return output

    def current(self, host: str, folder: str = "dags") -> Path:
        return (self.root / host / folder / "current").resolve()

    def releases(self, host: str, folder: str = "dags") -> list[str]:
        return sorted(p.name for p in (self.root / host / folder / "releases").iterdir())


def changed(output: str, host: str) -> int:
    match = re.search(rf"^{host}\s*:.*changed=(\d+)", output, re.M)
    assert match, output
    return int(match.group(1))


def tree(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


@pytest.fixture
def sync(tmp_path: Path) -> Sync:
    dags, plugins = tmp_path / "src" / "dags", tmp_path / "src" / "plugins"
    (dags / "team_a").mkdir(parents=True)
    (dags / "__pycache__").mkdir()
    plugins.mkdir(parents=True)
    (dags / "etl.py").write_text("# etl v1\n")
    (dags / "team_a" / "report.py").write_text("# report v1\n")
    (dags / "__pycache__" / "etl.cpython-311.pyc").write_bytes(b"\0cache")
    (dags / ".flowschedignore").write_text("scratch/\n")
    (plugins / "my_operator.py").write_text("# operator v1\n")
    root = tmp_path / "hosts"
    root.mkdir()
    return Sync(root, dags, plugins)


def shipped(source: Path) -> dict[str, str]:
    return {k: v for k, v in tree(source).items() if "__pycache__" not in k}


@pytest.mark.timeout(900)  # many playbook runs: over 300 s when the lab shares the cores
def test_dag_sync_lifecycle(sync: Sync) -> None:
    """One scenario, run after run (each run of the role takes seconds)."""
    # 1. First sync: every host gets the same files in a content-named release.
    output = sync.ok()
    assert set(shipped(sync.dags)) == {"etl.py", "team_a/report.py", ".flowschedignore"}
    for host in HOSTS:
        assert (sync.root / host / "dags" / "current").is_symlink()
        assert tree(sync.current(host)) == shipped(sync.dags)
        assert tree(sync.current(host, "plugins")) == tree(sync.plugins)
        assert (sync.current(host) / "etl.py").stat().st_mode & 0o777 == 0o640
        assert f"{host}: dags" in output and "(3 files) verified" in output
    first = sync.current("worker1")
    assert first.name.split("-")[-1] == sync.current("worker2").name.split("-")[-1]

    # 2. Nothing changed: nothing to do.
    output = sync.ok()
    assert [changed(output, host) for host in HOSTS] == [0, 0], output
    assert sync.current("worker1") == first

    # 3. DAGs changed. A check run names the files it would ship, per host and
    # in all, and changes nothing.
    (sync.dags / "etl.py").write_text("# etl v2\n")
    (sync.dags / "team_a" / "report.py").unlink()
    (sync.dags / "new_dag.py").write_text("# new\n")
    before = {host: sync.releases(host) for host in HOSTS}
    output = sync.ok("--check", "--diff")
    assert (
        "would ship 3 DAG file(s) (etl.py, new_dag.py, team_a/report.py) to 2 of 2 hosts; "
        "would ship 0 plugin file(s) to 0 of 2 hosts" in output
    ), output
    assert "worker2: would ship a new release of dags (3 files), 3 of them changed" in output
    for host in HOSTS:
        assert sync.releases(host) == before[host]
        assert tree(sync.current(host)) != shipped(sync.dags)
    assert sync.current("worker1") == first

    # The real run: a new release is swapped in, the old one kept, no restart.
    output = sync.ok()
    for host in HOSTS:
        assert tree(sync.current(host)) == shipped(sync.dags)
    assert sync.current("worker1") != first and first.exists()
    assert "Read which services run on this host" not in output

    # 4. Plugins changed everywhere, and a DAG edited by hand on worker2: the
    # running plugin consumers are marked for the rolling restart, the edited
    # copy is replaced on worker2 only.
    (sync.plugins / "my_operator.py").write_text("# operator v2\n")
    (sync.current("worker2") / "etl.py").write_text("# edited on the host\n")
    dags_on_worker1 = sync.current("worker1")
    output = sync.ok()
    assert "TASK [dag_sync : Read which services run on this host]" in output, output
    for host in HOSTS:
        assert tree(sync.current(host, "plugins")) == tree(sync.plugins)
        assert tree(sync.current(host)) == shipped(sync.dags)
    assert sync.current("worker1") == dags_on_worker1
    assert (sync.current("worker2") / "etl.py").read_text() == "# etl v2\n"

    # Old releases were pruned down to dag_sync_keep_releases (2), current kept.
    for host in HOSTS:
        releases = sync.releases(host)
        assert len(releases) == 2 and sync.current(host).name in releases, releases

    # 5. A release that does not match the control machine is refused, naming
    # the host and the files, and current stays where it was.
    release_id = sync.current("worker1").name.split("-")[-1]
    (tarball,) = (sync.root / "cache").glob(f"dags-{release_id}*.tar.gz")
    bad = tarfile_with({"etl.py": b"# not what was synced\n"})
    tarball.write_bytes(bad)
    (sync.current("worker2") / "etl.py").write_text("# edited again\n")
    before = sync.current("worker2")
    result = sync.run()
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert "worker2: the new release of dags does not match the control" in output, output
    assert re.search(r"these files differ: \.flowschedignore, etl\.py, new_dag\.py", output), output
    assert sync.current("worker2") == before
    assert changed(output, "worker1") == 0
    assert not (sync.current("worker2") / "etl.py").read_text().startswith("# not what")


def test_tags_sync_one_folder(sync: Sync) -> None:
    """`--tags dags` ships the DAG folder only, `--tags plugins` the plugin folder only."""
    sync.ok()
    plugins_before = {host: sync.current(host, "plugins") for host in HOSTS}
    (sync.dags / "etl.py").write_text("# etl v2\n")
    (sync.plugins / "my_operator.py").write_text("# operator v2\n")

    output = sync.ok("--tags", "dags")
    for host in HOSTS:
        assert tree(sync.current(host)) == shipped(sync.dags)
        assert sync.current(host, "plugins") == plugins_before[host]
        assert tree(sync.current(host, "plugins")) != tree(sync.plugins)
    assert "plugins" not in re.findall(r"^TASK \[dag_sync : .*\]", output, re.M).__str__()

    dags_now = {host: sync.current(host) for host in HOSTS}
    sync.ok("--tags", "plugins")
    for host in HOSTS:
        assert tree(sync.current(host, "plugins")) == tree(sync.plugins)
        assert sync.current(host) == dags_now[host]


def tarfile_with(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()
