"""TLS on every link, against real servers that refuse plain text.

One CA and one certificate for 127.0.0.1/127.0.0.2 (the loopback "hosts"),
made in the test; a private Redis listening on ``tls-port`` only
(``port 0``) and a private MariaDB with ``require_secure_transport``, as the
playbooks configure them. A Celery try runs end to end through both, its log
is fetched from the worker's log server over HTTPS, and the webserver answers
over HTTPS. Plain-text clients, and clients that trust another CA, are
refused: the certificates are really checked.
"""

from __future__ import annotations

import socket
import ssl
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import MySQLdb
import pytest
import redis
import requests

from flowsched.config import load_config, set_config
from flowsched.db.engine import reset_engine
from flowsched.exceptions import ConfigError
from flowsched.task_logs.client import LogUnavailable, fetch_task_log_tail, log_url
from flowsched.tls import broker_ssl, mysql_connect_args
from tests.certificates import HostFiles, make_ca_and_host
from tests.distributed.conftest import Cluster, activate, make_cluster
from tests.servers import MariaDBServer, free_port, start_mariadb, start_redis, wait_for_port

HOSTS = ["127.0.0.1", "127.0.0.2", "localhost"]


def tls_settings(files: HostFiles) -> dict[str, dict[str, str]]:
    """The TLS options of flowsched.cfg, as the playbooks write them."""
    return {
        "celery": {
            "ssl_active": "true",
            "ssl_cacert": str(files.ca),
            "ssl_cert": str(files.cert),
            "ssl_key": str(files.key),
        },
        "database": {"ssl_ca": str(files.ca)},
        "worker": {
            "log_server_ssl_cert": str(files.cert),
            "log_server_ssl_key": str(files.key),
            "log_server_ssl_ca": str(files.ca),
        },
        "webserver": {
            "web_server_ssl_cert": str(files.cert),
            "web_server_ssl_key": str(files.key),
        },
    }


def connect_mariadb(server: MariaDBServer, **options: Any) -> MySQLdb.Connection:
    """A connection to the test's MariaDB as its account, with ``options`` (TLS or not)."""
    return MySQLdb.connect(
        host="127.0.0.1",
        port=server.port,
        user=server.user,
        password=server.password,
        connect_timeout=10,
        **options,
    )


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> tuple[HostFiles, HostFiles]:
    """The cluster's files, and another CA's (which the servers must not accept)."""
    root = tmp_path_factory.mktemp("pki")
    return make_ca_and_host(root / "cluster", "cluster", HOSTS), make_ca_and_host(
        root / "other", "other", HOSTS
    )


@pytest.fixture(scope="module")
def tls_mariadb(
    tmp_path_factory: pytest.TempPathFactory, pki: tuple[HostFiles, HostFiles]
) -> Iterator[MariaDBServer]:
    server = start_mariadb(tmp_path_factory.mktemp("tls-mariadb"), tls=pki[0])
    yield server
    server.stop()


@pytest.fixture(scope="module")
def tls_cluster(
    tmp_path_factory: pytest.TempPathFactory,
    tls_mariadb: MariaDBServer,
    pki: tuple[HostFiles, HostFiles],
) -> Iterator[Cluster]:
    """Scheduler and one worker (127.0.0.2) on a TLS-only Redis and MariaDB."""
    root = tmp_path_factory.mktemp("tls-cluster")
    redis_server = start_redis(root / "redis", tls=pki[0])
    cluster = make_cluster(root, tls_mariadb, redis_server, extra=tls_settings(pki[0]))
    try:
        cluster.start_scheduler()
        cluster.a = cluster.start_worker("a")
        yield cluster
    finally:
        cluster.stop_all()
        redis_server.stop()


@pytest.fixture
def client(tls_cluster: Cluster, monkeypatch: pytest.MonkeyPatch) -> Iterator[Cluster]:
    activate(tls_cluster, monkeypatch)
    yield tls_cluster
    reset_engine()
    set_config(None)


def test_a_celery_try_runs_over_tls_and_its_log_comes_over_https(client: Cluster) -> None:
    client.write_dag("over_tls", "BashOperator(task_id='t', bash_command='echo through-tls')")
    run_id = client.trigger("over_tls")
    assert client.wait_run("over_tls", run_id) == "success"
    ti = client.tis("over_tls", run_id)["t"]
    assert ti.hostname == client.a.hostname
    # This process has no log folder of its own: the text came from the worker's log
    # server, over HTTPS checked against the cluster CA.
    tail = fetch_task_log_tail(ti.hostname, "over_tls", run_id, "t", 1, 65536)
    assert b"through-tls" in tail.data
    assert log_url(ti.hostname, "x").startswith(f"https://{ti.hostname}:")


def test_plain_text_is_refused_by_every_server(client: Cluster, tls_mariadb: MariaDBServer) -> None:
    # Redis listens on its TLS port only (port 0): a plain client gets no answer.
    plain = redis.Redis(host="127.0.0.1", port=client.redis.port, socket_timeout=5)
    with pytest.raises(redis.exceptions.ConnectionError):
        plain.ping()
    # MariaDB: require_secure_transport refuses the login of a plain TCP client.
    with pytest.raises(MySQLdb.OperationalError) as refused:
        connect_mariadb(tls_mariadb, ssl_mode="DISABLED")
    # (MariaDB answers "access denied"; the same account over TLS gets in, see below.)
    assert refused.value.args[0] in (1045, 3159), refused.value
    connect_mariadb(tls_mariadb, **mysql_connect_args()).close()
    # The worker's log server: plain HTTP gets no log.
    with pytest.raises(requests.exceptions.ConnectionError):
        requests.get(f"http://{client.a.hostname}:{client.log_port}/log/x", timeout=10)


def test_a_client_trusting_another_ca_is_refused(
    client: Cluster, tls_mariadb: MariaDBServer, pki: tuple[HostFiles, HostFiles], tmp_path: Path
) -> None:
    other = pki[1]
    conf = load_config(
        client.home.config_file,
        environ={
            "FLOWSCHED__CELERY__SSL_CACERT": str(other.ca),
            "FLOWSCHED__DATABASE__SSL_CA": str(other.ca),
        },
    )
    wrong = redis.Redis(
        host="127.0.0.1",
        port=client.redis.port,
        ssl=True,
        socket_timeout=5,
        **broker_ssl(conf),
    )
    with pytest.raises(redis.exceptions.ConnectionError, match="certificate verify failed"):
        wrong.ping()
    with pytest.raises(MySQLdb.OperationalError):
        connect_mariadb(tls_mariadb, **mysql_connect_args(conf))
    # Redis asks for a client certificate of the cluster CA (tls-auth-clients yes).
    anonymous = redis.Redis(
        host="127.0.0.1",
        port=client.redis.port,
        ssl=True,
        ssl_cert_reqs=ssl.CERT_REQUIRED,
        ssl_ca_certs=str(pki[0].ca),
        socket_timeout=5,
    )
    with pytest.raises(redis.exceptions.ConnectionError):
        anonymous.ping()
    # With the cluster CA the same connections succeed: the CA is what differed.
    right = load_config(client.home.config_file, environ={})
    assert redis.Redis(
        host="127.0.0.1", port=client.redis.port, ssl=True, socket_timeout=5, **broker_ssl(right)
    ).ping()
    connect_mariadb(tls_mariadb, **mysql_connect_args(right)).close()
    # The log client checks the log server's certificate too.
    client.home.configure(worker={"log_server_ssl_ca": str(other.ca)})
    with pytest.raises(LogUnavailable, match="CERTIFICATE_VERIFY_FAILED"):
        fetch_task_log_tail(client.a.hostname, "none", "r", "t", 1, 100)
    client.home.configure(worker={"log_server_ssl_ca": str(pki[0].ca)})


def test_the_webserver_answers_over_https_with_the_host_certificate(
    client: Cluster, pki: tuple[HostFiles, HostFiles]
) -> None:
    port = free_port()
    output = client.root / f"web-{uuid.uuid4().hex[:6]}.log"
    with output.open("wb") as sink:
        web = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "flowsched",
                "webserver",
                "--bind",
                f"127.0.0.1:{port}",
                "--workers",
                "1",
            ],
            env=client.cli_env(),
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_for_port(port, timeout=60, proc=web)
        page = requests.get(f"https://127.0.0.1:{port}/login", verify=str(pki[0].ca), timeout=10)
        assert page.status_code == 200
        context = ssl.create_default_context(cafile=str(pki[0].ca))
        with (
            socket.create_connection(("127.0.0.1", port), timeout=10) as raw,
            context.wrap_socket(raw, server_hostname="127.0.0.1") as tls,
        ):
            served = tls.getpeercert(binary_form=True)
        assert served == ssl.PEM_cert_to_DER_cert(pki[0].cert.read_text())
        with pytest.raises(requests.exceptions.SSLError):
            requests.get(f"https://127.0.0.1:{port}/login", verify=str(pki[1].ca), timeout=10)
    finally:
        web.terminate()
        web.wait(30)
    assert web.returncode == 0, output.read_text()[-3000:]


def test_tls_options_without_their_partners_fail_at_start(tmp_path: Path) -> None:
    with pytest.raises(
        ConfigError, match=r"\[celery\] ssl_active is set but \[celery\] ssl_cacert"
    ):
        load_config(tmp_path / "none.cfg", environ={"FLOWSCHED__CELERY__SSL_ACTIVE": "true"})
    with pytest.raises(ConfigError, match="web_server_ssl_key is set but"):
        load_config(
            tmp_path / "none.cfg", environ={"FLOWSCHED__WEBSERVER__WEB_SERVER_SSL_KEY": "/k.pem"}
        )
    conf = load_config(
        tmp_path / "none.cfg",
        environ={
            "FLOWSCHED__CELERY__SSL_ACTIVE": "true",
            "FLOWSCHED__CELERY__SSL_CACERT": str(tmp_path / "missing.pem"),
        },
    )
    with pytest.raises(
        ConfigError, match=r"\[celery\] ssl_cacert = .*missing.pem: the file does not"
    ):
        broker_ssl(conf)
