"""``docker_conn_id``: the DockerOperator pulls from a real password-protected registry.

The registry is Debian's ``docker-registry`` (the CNCF distribution) with htpasswd
auth on loopback; the image is pushed to it through Podman's Docker API, then removed
locally so the task must pull it with the connection's credentials.

Needs: ``apt-get install docker-registry apache2-utils``.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from flowsched import operations
from flowsched.connection import Connection
from flowsched.crypto import generate_key
from flowsched.secrets.metastore import add_connection
from tests.certificates import self_signed
from tests.docker.test_docker_operator import log_of, write
from tests.harness import drive, run_finished, tries
from tests.servers import free_port, wait_for_port

USER, PASSWORD = "reguser", "Reg-Pa55word"


@dataclass
class Registry:
    address: str  # host:port
    image: str  # the test image, pushed there


CERTS_D = Path("/etc/containers/certs.d")


@pytest.fixture
def registry(podman, tmp_path: Path) -> Iterator[Registry]:
    missing = [tool for tool in ("docker-registry", "htpasswd") if shutil.which(tool) is None]
    if missing:
        pytest.fail(f"missing {', '.join(missing)}: apt-get install docker-registry apache2-utils")
    port = free_port()
    address = f"127.0.0.1:{port}"
    users = subprocess.run(
        ["htpasswd", "-Bbn", USER, PASSWORD], check=True, capture_output=True, text=True
    ).stdout
    (tmp_path / "htpasswd").write_text(users)
    cert, key = self_signed(tmp_path, "registry", "flowsched-test-registry")
    config = tmp_path / "registry.yml"
    config.write_text(
        "version: 0.1\nlog: {level: warn}\n"
        f"storage: {{filesystem: {{rootdirectory: {tmp_path / 'data'}}}}}\n"
        f"http: {{addr: '{address}', tls: {{certificate: {cert}, key: {key}}}}}\n"
        f"auth: {{htpasswd: {{realm: flowsched-test, path: {tmp_path / 'htpasswd'}}}}}\n"
    )
    # Podman trusts the registry's certificate through certs.d/<host:port>/ca.crt, read
    # at each pull; that folder is this test's own (a fresh port) and removed after it.
    created = next(p for p in (CERTS_D, *CERTS_D.parents) if p.exists() or p == Path("/"))
    trust = CERTS_D / address
    trust.mkdir(parents=True)
    shutil.copy(cert, trust / "ca.crt")
    with (tmp_path / "registry.log").open("wb") as output:
        server = subprocess.Popen(
            ["docker-registry", "serve", str(config)], stdout=output, stderr=subprocess.STDOUT
        )
    image = f"{address}/flowsched/busybox:1"
    try:
        wait_for_port(port, timeout=30, proc=server)
        with contextlib.closing(podman.client()) as client:
            client.images.get(podman.image).tag(f"{address}/flowsched/busybox", "1")
            auth = {"username": USER, "password": PASSWORD}
            for event in client.api.push(
                f"{address}/flowsched/busybox", "1", stream=True, decode=True, auth_config=auth
            ):
                assert "error" not in event, event
            client.images.remove(image)  # the task must pull it
        yield Registry(address, image)
    finally:
        shutil.rmtree(trust, ignore_errors=True)
        for folder in (CERTS_D, *CERTS_D.parents):  # only the folders this test created
            if folder == created or not folder.exists() or any(folder.iterdir()):
                break
            folder.rmdir()
        with contextlib.suppress(Exception), contextlib.closing(podman.client()) as client:
            client.images.remove(image, force=True)
        server.terminate()
        server.wait(15)


PULL = """
with DAG("{dag_id}", start_date=datetime(2026, 1, 1), schedule=None) as dag:
    DockerOperator(task_id="pulled", image="{image}", network_mode="none",
                   pull_policy="always", docker_conn_id="{conn_id}", command="echo pulled-ok",
                   retries=0)
"""


def test_docker_conn_id_pulls_with_the_connections_credentials(docker_home, podman, registry):
    docker_home.configure(core={"fernet_key": generate_key()})
    host, port = registry.address.split(":")
    add_connection(
        Connection(conn_id="registry", conn_type="docker", host=host, port=int(port),
                   login=USER, password=PASSWORD)
    )  # fmt: skip
    add_connection(
        Connection(conn_id="wrong_pw", conn_type="docker", host=host, port=int(port),
                   login=USER, password="Not-the-password")
    )  # fmt: skip
    add_connection(
        Connection(conn_id="elsewhere", conn_type="docker", host="registry.example.com",
                   login=USER, password=PASSWORD)
    )  # fmt: skip
    for dag_id, conn_id in (("reg_ok", "registry"), ("reg_bad", "wrong_pw"),
                            ("reg_other", "elsewhere"), ("reg_none", "nope")):  # fmt: skip
        write(docker_home, dag_id, PULL, image=registry.image, conn_id=conn_id)
        operations.trigger_dag(dag_id)
        drive(run_finished(dag_id), timeout=120)

    [ok] = tries("reg_ok", "pulled")
    assert ok.state == "success", ok.error
    assert "pulled-ok" in log_of(docker_home, "reg_ok", "pulled").splitlines()
    [bad] = tries("reg_bad", "pulled")
    assert bad.state == "failed" and f"cannot pull image {registry.image}" in bad.error
    assert "Not-the-password" not in log_of(docker_home, "reg_bad", "pulled")
    [other] = tries("reg_other", "pulled")
    assert "holds credentials for registry.example.com: not sending them" in other.error
    [none] = tries("reg_none", "pulled")
    assert "docker_conn_id: The conn_id `nope` isn't defined" in none.error
