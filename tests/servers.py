"""Real Redis and MariaDB servers on free loopback ports, started and stopped by the suite.

They are Debian's ``redis-server`` and ``mariadbd``, each with its own data
directory under the test run's temporary folder, so the suite never touches
a system service and can run anywhere those packages are installed.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import MySQLdb

from tests.certificates import HostFiles


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_port(port: int, timeout: float = 30.0, proc: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode} before listening on {port}")
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {timeout}s")


def _require(binary: str, package: str) -> str:
    path = shutil.which(binary) or (
        f"/usr/sbin/{binary}" if Path(f"/usr/sbin/{binary}").exists() else None
    )
    if path is None:
        raise RuntimeError(f"{binary} not found: install Debian's {package} (scripts/test does)")
    return path


@dataclass
class RedisServer:
    port: int
    process: subprocess.Popen
    tls: HostFiles | None = None

    @property
    def url(self) -> str:
        scheme = "rediss" if self.tls else "redis"
        return f"{scheme}://127.0.0.1:{self.port}/0"

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(10)

    def restart(self) -> None:
        self.stop()
        self.start_again()

    def start_again(self) -> None:
        """Start the stopped server on the same port (empty: it keeps no data)."""
        self.process = _spawn_redis(self.port, Path(self.process.args[-1]), self.tls)
        wait_for_port(self.port, proc=self.process)


def _redis_listen_args(port: int, tls: HostFiles | None) -> list[str]:
    """Plain ``port``, or as the playbooks set it: TLS only (``tls-port``, ``port 0``)."""
    if tls is None:
        return ["--port", str(port)]
    return [
        "--port",
        "0",
        "--tls-port",
        str(port),
        "--tls-cert-file",
        str(tls.cert),
        "--tls-key-file",
        str(tls.key),
        "--tls-ca-cert-file",
        str(tls.ca),
        "--tls-auth-clients",
        "yes",
    ]


def _spawn_redis(port: int, workdir: Path, tls: HostFiles | None = None) -> subprocess.Popen:
    binary = _require("redis-server", "redis-server")
    return subprocess.Popen(
        [
            binary,
            *_redis_listen_args(port, tls),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--daemonize",
            "no",
            "--loglevel",
            "warning",
            "--dir",
            str(workdir),
        ],
        stdout=subprocess.DEVNULL,
        cwd=workdir,
    )


def start_redis(workdir: Path, tls: HostFiles | None = None) -> RedisServer:
    """A Redis on a free port; with ``tls``, reachable over TLS only."""
    workdir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    process = _spawn_redis(port, workdir, tls)
    wait_for_port(port, proc=process)
    return RedisServer(port, process, tls)


@dataclass
class MariaDBServer:
    port: int
    socket_path: str
    process: subprocess.Popen
    user: str = "flowsched"
    password: str = "flowsched-test"

    def admin(self) -> MySQLdb.Connection:
        return MySQLdb.connect(unix_socket=self.socket_path, user="root")

    def create_database(self, name: str) -> str:
        conn = self.admin()
        try:
            conn.cursor().execute(
                f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci"
            )
        finally:
            conn.close()
        return (
            f"mysql+mysqldb://{self.user}:{self.password}@127.0.0.1:{self.port}/{name}"
            "?charset=utf8mb4"
        )

    def drop_database(self, name: str) -> None:
        conn = self.admin()
        try:
            conn.cursor().execute(f"DROP DATABASE IF EXISTS `{name}`")
        finally:
            conn.close()

    def stop(self) -> None:
        self.process.send_signal(signal.SIGTERM)
        self.process.wait(60)

    def start_again(self) -> None:
        """Start the stopped server on the same data, port and socket (ends an outage)."""
        assert self.process.poll() is not None, "the server is still running"
        errors = Path(self.socket_path).parent / "mariadb.err"
        with errors.open("ab") as sink:
            self.process = subprocess.Popen(
                self.process.args, stdout=subprocess.DEVNULL, stderr=sink
            )
        wait_for_port(self.port, timeout=60, proc=self.process)


def _mariadb_tls_args(tls: HostFiles | None) -> list[str]:
    """As the playbooks set it: the host's certificate, and TCP clients must use TLS."""
    if tls is None:
        return []
    return [
        f"--ssl-ca={tls.ca}",
        f"--ssl-cert={tls.cert}",
        f"--ssl-key={tls.key}",
        "--require-secure-transport=ON",
    ]


def start_mariadb(workdir: Path, tls: HostFiles | None = None) -> MariaDBServer:
    mariadbd = _require("mariadbd", "mariadb-server")
    install = _require("mariadb-install-db", "mariadb-server")
    datadir = workdir / "data"
    datadir.mkdir(parents=True, exist_ok=True)
    user = ["--user=root"] if os.geteuid() == 0 else []
    subprocess.run(
        [
            install,
            "--no-defaults",
            f"--datadir={datadir}",
            "--auth-root-authentication-method=socket",
            "--skip-test-db",
            *user,
        ],
        check=True,
        capture_output=True,
    )
    port = free_port()
    socket_path = str(workdir / "mariadb.sock")
    process = subprocess.Popen(
        [
            mariadbd,
            "--no-defaults",
            f"--datadir={datadir}",
            f"--socket={socket_path}",
            f"--port={port}",
            "--bind-address=127.0.0.1",
            "--skip-name-resolve",
            f"--pid-file={workdir / 'mariadb.pid'}",
            "--innodb-buffer-pool-size=64M",
            "--explicit-defaults-for-timestamp=1",
            "--character-set-server=utf8mb4",
            "--max-connections=500",
            "--innodb-flush-log-at-trx-commit=2",
            *_mariadb_tls_args(tls),
            *user,
        ],
        stdout=subprocess.DEVNULL,
        stderr=open(workdir / "mariadb.err", "wb"),  # noqa: SIM115 - lives with the server
    )
    wait_for_port(port, timeout=60, proc=process)
    server = MariaDBServer(port, socket_path, process)
    conn = server.admin()
    try:
        cursor = conn.cursor()
        cursor.execute(f"CREATE USER '{server.user}'@'%' IDENTIFIED BY '{server.password}'")
        cursor.execute(f"GRANT ALL PRIVILEGES ON *.* TO '{server.user}'@'%'")
    finally:
        conn.close()
    return server
