"""A real Docker-compatible engine API for the DockerOperator tests: Podman's service.

No Docker engine runs on the test machines, but ``podman system service``
serves the Docker Engine API. The session fixture gives it a private storage,
run directory, containers.conf and registries.conf (``CONTAINERS_CONF``,
``CONTAINERS_REGISTRIES_CONF``), so the machine's own container setup is
neither read nor changed (only Podman's blob cache in /var/lib/containers/cache
is shared), imports a busybox image built from Debian's ``busybox-static`` (no
registry needed), and stops the service at the end.

Needs: ``apt-get install podman runc busybox-static``.
"""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import subprocess
import tarfile
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import docker
import pytest

from tests.conftest import Home

IMAGE = "localhost/flowsched-test-busybox:1"
BUSYBOX = Path("/bin/busybox")
APPLETS = ("sh", "echo", "sleep", "env", "cat", "ls", "touch", "test", "true", "false")

# runc, not crun: crun fails on this machine's hybrid cgroups; the ulimits are
# ones an unprivileged container may have. Events and state stay in our directory.
CONTAINERS_CONF = """\
[containers]
default_ulimits = ["nofile=20000:20000", "nproc=4096:4096"]

[engine]
runtime = "runc"
events_logger = "none"
tmp_dir = "{base}/tmp"

[network]
network_config_dir = "{base}/networks"
"""


@dataclass
class PodmanService:
    url: str
    socket: Path
    image: str

    def client(self) -> docker.DockerClient:
        return docker.DockerClient(base_url=self.url, timeout=30)

    def containers(self, dag_id: str) -> list[tuple[str, str]]:
        """(try number, status) of every container of a DAG's tasks, found by their labels."""
        with contextlib.closing(self.client()) as client:
            found = client.containers.list(
                all=True, filters={"label": f"flowsched.dag_id={dag_id}"}
            )
            return sorted((c.labels["flowsched.try_number"], c.status) for c in found)


def _busybox_rootfs() -> bytes:
    """A tar of a root filesystem holding only a static busybox and its applet links."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for folder in ("bin", "tmp", "proc", "sys", "dev", "etc"):
            info = tarfile.TarInfo(folder)
            info.type, info.mode = tarfile.DIRTYPE, 0o1777 if folder == "tmp" else 0o755
            tar.addfile(info)
        tar.add(BUSYBOX, arcname="bin/busybox")
        for applet in APPLETS:
            info = tarfile.TarInfo(f"bin/{applet}")
            info.type, info.linkname = tarfile.SYMTYPE, "busybox"
            tar.addfile(info)
    return buffer.getvalue()


@pytest.fixture(scope="session")
def podman() -> Iterator[PodmanService]:
    missing = [tool for tool in ("podman", "runc") if shutil.which(tool) is None]
    if missing or not BUSYBOX.exists():
        pytest.fail(
            f"missing {', '.join(missing) or BUSYBOX}: apt-get install podman runc busybox-static"
        )
    # World-searchable, so an unprivileged user reaches the socket and is refused by the
    # socket's own mode (0600, root): the real situation of a worker outside 'docker'.
    base = Path(tempfile.mkdtemp(prefix="flowsched-podman-"))
    base.chmod(0o755)
    conf = base / "containers.conf"
    conf.write_text(CONTAINERS_CONF.format(base=base))
    registries = base / "registries.conf"
    registries.write_text('unqualified-search-registries = ["docker.io"]\n')
    env = {
        **os.environ,
        "CONTAINERS_CONF": str(conf),
        "CONTAINERS_REGISTRIES_CONF": str(registries),
    }
    cli = ["podman", "--root", str(base / "storage"), "--runroot", str(base / "run")]
    rootfs = base / "rootfs.tar"
    rootfs.write_bytes(_busybox_rootfs())
    subprocess.run([*cli, "import", str(rootfs), IMAGE], env=env, check=True, capture_output=True)
    socket = base / "podman.sock"
    with (base / "service.log").open("wb") as service_log:
        # In the service's own folder: conmon writes a file named "oom" into its working
        # directory when a container is OOM-killed (it left one in the checkout).
        service = subprocess.Popen(
            [*cli, "system", "service", "--time=0", f"unix://{socket}"],
            cwd=base,
            env=env,
            stdout=service_log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    podman = PodmanService(url=f"unix://{socket}", socket=socket, image=IMAGE)
    try:
        _wait_for_api(podman, service, base / "service.log")
        yield podman
    finally:
        service.terminate()
        try:
            service.wait(15)
        except subprocess.TimeoutExpired:
            service.kill()
            service.wait()
        subprocess.run(
            [*cli, "rm", "--all", "--force", "--time", "0"], env=env, capture_output=True
        )
        subprocess.run([*cli, "rmi", "--all", "--force"], env=env, capture_output=True)
        shutil.rmtree(base, ignore_errors=True)


def _wait_for_api(podman: PodmanService, service: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if service.poll() is not None:
            pytest.fail(f"podman system service exited:\n{log.read_text()}")
        if podman.socket.exists():
            try:
                with contextlib.closing(podman.client()) as client:
                    client.ping()
                return
            except docker.errors.DockerException:
                pass
        time.sleep(0.2)
    pytest.fail(f"podman system service did not answer in 30s:\n{log.read_text()}")


@pytest.fixture
def docker_home(sqlite_home: Home, podman: PodmanService, monkeypatch: pytest.MonkeyPatch) -> Home:
    """A flowsched home whose task processes reach the Podman API by FLOWSCHED_DOCKER_HOST."""
    monkeypatch.setenv("FLOWSCHED_DOCKER_HOST", podman.url)
    return sqlite_home
