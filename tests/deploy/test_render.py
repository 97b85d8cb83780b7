"""Render the deployment's templates for sample inventories through real Ansible
templating, then check them: `systemd-analyze verify` on every unit, and the
per-host values of flowsched.cfg and flowsched.env."""

from __future__ import annotations

import configparser
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from flowsched.task_logs.files import read_tail
from tests.deploy.conftest import HERE, REPO, ansible_env, tool

UNITS = [
    "flow-scheduler.service",
    "flow-webserver.service",
    "flow-worker.service",
    "flow-flower.service",
    "flow-log-cleanup.service",
    "flow-log-cleanup.timer",
]
LONG_RUNNING = UNITS[:4]

# Sample inventories: name -> (timezone, {worker host: its address})
SAMPLES = {
    "gmt8": ("Etc/GMT-8", {"worker1": "10.77.0.31", "worker2": "10.77.0.32"}),
    "shanghai": ("Asia/Shanghai", {"worker1": "192.168.50.31", "worker2": "192.168.50.32"}),
}
APP_HOSTS = ["master1", "worker1", "worker2"]


# The render fixture runs Ansible for both samples (about a minute each on a quiet
# 2-core machine, several under load): the module's tests get the time it takes.
pytestmark = pytest.mark.timeout(900)
RENDER_DEADLINE = 600  # seconds, both samples at once


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Render both sample inventories once, side by side (Ansible here mostly waits
    on its own module processes); install root `current` is this venv, so ExecStart
    points at the real `flowsched` console script."""
    install_root = tmp_path_factory.mktemp("opt-flowsched")
    (install_root / "current").symlink_to(sys.prefix, target_is_directory=True)
    runs: dict[str, tuple[Path, subprocess.Popen[bytes]]] = {}
    try:
        for name in SAMPLES:
            root = tmp_path_factory.mktemp(f"render-{name}")
            with (root / "render.log").open("wb") as log:
                runs[name] = (
                    root,
                    subprocess.Popen(
                        [
                            tool("ansible-playbook"),
                            "-i",
                            str(HERE / "inventories" / name),
                            str(HERE / "render.yml"),
                            "-e",
                            f"render_root={root}",
                            "-e",
                            f"flowsched_install_root={install_root}",
                        ],
                        cwd=REPO,
                        env=ansible_env(root),
                        stdout=log,
                        stderr=subprocess.STDOUT,
                    ),
                )
        deadline = time.monotonic() + RENDER_DEADLINE
        for name, (root, process) in runs.items():
            code = process.wait(timeout=max(1.0, deadline - time.monotonic()))
            assert code == 0, f"rendering {name} failed:\n" + _tail(root / "render.log")
    finally:
        for _, process in runs.values():
            if process.poll() is None:
                process.kill()
                process.wait()
    return {name: root for name, (root, _) in runs.items()}


def _tail(path: Path, size: int = 20_000) -> str:
    """The end of a log, at most ``size`` bytes of it."""
    with path.open("rb") as log:
        return read_tail(log, size).text()


def read_cfg(path: Path) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(interpolation=None)
    parser.read_string(path.read_text())
    return parser


def read_env(path: Path) -> dict[str, str]:
    env = {}
    for line in path.read_text().splitlines():
        if line and not line.startswith("#"):
            key, _, value = line.partition("=")
            assert value.startswith("'") and value.endswith("'"), line
            env[key] = value[1:-1]
    return env


def unit_settings(path: Path) -> dict[str, list[str]]:
    settings: dict[str, list[str]] = {}
    for line in path.read_text().splitlines():
        if "=" in line and not line.startswith(("#", "[")):
            key, _, value = line.partition("=")
            settings.setdefault(key, []).append(value)
    return settings


@pytest.mark.parametrize("sample", SAMPLES)
@pytest.mark.parametrize("host", APP_HOSTS)
def test_every_rendered_unit_passes_systemd_analyze_verify(
    rendered: dict[str, Path], sample: str, host: str
) -> None:
    assert shutil.which("systemd-analyze"), "systemd-analyze is needed (apt-get install systemd)"
    folder = rendered[sample] / host
    result = subprocess.run(
        ["systemd-analyze", "verify", *(str(folder / unit) for unit in UNITS)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    # verify reports unknown keys and bad values on stderr but still exits 0.
    assert result.stderr.strip() == "", result.stderr


def test_verify_rejects_a_broken_unit(rendered: dict[str, Path], tmp_path: Path) -> None:
    """The check above can fail: a typo in ExecStart or a directive is caught."""
    text = (rendered["gmt8"] / "worker1" / "flow-worker.service").read_text()
    broken = tmp_path / "flow-worker.service"
    broken.write_text(
        text.replace("/bin/flowsched worker", "/bin/flowshed worker").replace(
            "KillMode=mixed", "KillMode=mixd"
        )
    )
    result = subprocess.run(
        ["systemd-analyze", "verify", str(broken)], capture_output=True, text=True, check=False
    )
    assert "flowshed" in result.stderr and "mixd" in result.stderr


@pytest.mark.parametrize("sample", SAMPLES)
@pytest.mark.parametrize("host", APP_HOSTS)
def test_long_running_units_stop_gracefully_and_are_hardened(
    rendered: dict[str, Path], sample: str, host: str
) -> None:
    data_dir, log_dir = (
        ("/data0/flowsched", "/data1/flowsched/logs")
        if sample == "gmt8"
        else ("/srv/flow/data", "/srv/flow/logs")
    )
    for unit in LONG_RUNNING:
        s = unit_settings(rendered[sample] / host / unit)
        assert s["User"] == ["flowsched"] and s["Group"] == ["flowsched"], unit
        assert s["EnvironmentFile"] == ["/etc/flowsched/flowsched.env"]
        assert s["Restart"] == ["on-failure"]
        assert s["KillMode"] == ["mixed"] and s["KillSignal"] == ["SIGTERM"]
        assert "SendSIGKILL" not in s
        assert len(s["TimeoutStopSec"]) == 1, unit  # explicit, never systemd's implicit 90 s
        assert s["NoNewPrivileges"] == ["yes"] and s["ProtectSystem"] == ["strict"]
        assert s["PrivateTmp"] == ["yes"] and s["ProtectHome"] == ["yes"]
        assert s["ReadWritePaths"][0].split()[:2] == [data_dir, log_dir]
    stop = {
        unit: unit_settings(rendered[sample] / host / unit)["TimeoutStopSec"]
        for unit in LONG_RUNNING
    }
    assert stop == {
        "flow-scheduler.service": ["120"],
        "flow-webserver.service": ["150"],  # gunicorn timeout 120 + 30
        "flow-worker.service": ["900"],  # above worker.shutdown_grace (600)
        "flow-flower.service": ["30"],
    }
    worker = unit_settings(rendered[sample] / host / "flow-worker.service")
    if (
        sample == "shanghai"
    ):  # an extra path is optional (-) so a missing one does not stop the unit
        assert worker["ReadWritePaths"][0].split()[2:] == ["-/var/run/docker.sock"]


@pytest.mark.parametrize("sample", SAMPLES)
@pytest.mark.parametrize("host", ["worker1", "worker2"])
def test_each_worker_gets_its_own_address(
    rendered: dict[str, Path], sample: str, host: str
) -> None:
    timezone, workers = SAMPLES[sample]
    ip = workers[host]
    folder = rendered[sample] / host
    cfg = read_cfg(folder / "flowsched.cfg")
    env = read_env(folder / "flowsched.env")
    unit = unit_settings(folder / "flow-worker.service")

    assert cfg["worker"]["nodename"] == f"{ip}@{ip}"
    assert cfg["core"]["default_timezone"] == timezone
    assert env["FLOWSCHED_HOSTNAME"] == ip
    assert env["FLOWSCHED_CONFIG"] == "/etc/flowsched/flowsched.cfg"
    assert f"FLOWSCHED_HOSTNAME={ip}" in unit["Environment"]
    exec_start = unit["ExecStart"][0].split()
    assert exec_start[1:4] == ["worker", "--nodename", f"{ip}@{ip}"]
    concurrency = "16" if host == "worker2" else "8"
    assert exec_start[exec_start.index("--concurrency") + 1] == concurrency
    assert cfg["celery"]["worker_concurrency"] == concurrency
    assert exec_start[exec_start.index("--queues") + 1] == "default"


@pytest.mark.parametrize("sample", SAMPLES)
def test_cluster_addresses_and_secrets_reach_every_host(
    rendered: dict[str, Path], sample: str
) -> None:
    base = "10.77.0" if sample == "gmt8" else "192.168.50"
    for host in APP_HOSTS:
        cfg = read_cfg(rendered[sample] / host / "flowsched.cfg")
        env = read_env(rendered[sample] / host / "flowsched.env")
        assert env["FLOWSCHED__DATABASE__SQL_ALCHEMY_CONN"] == (
            f"mysql+mysqldb://flowsched:db-secret-{sample}@{base}.11:3306/flowsched?charset=utf8mb4"
        )
        assert (
            env["FLOWSCHED__CELERY__BROKER_URL"]
            == f"redis://:broker-secret-{sample}@{base}.12:6379/0"
        )
        assert (
            env["FLOWSCHED__CORE__SECRET_KEY"] == f"key-{sample}-4e1f0a9c7b2d5e8f3a6c1b0d9e7f2a4c"
        )
        # Secrets live in flowsched.env only.
        cfg_text = (rendered[sample] / host / "flowsched.cfg").read_text()
        assert f"db-secret-{sample}" not in cfg_text and f"broker-secret-{sample}" not in cfg_text
        assert cfg["core"]["executor"] == "celery"
        assert cfg["core"]["dags_folder"].endswith("/dags/current")
        assert cfg["core"]["plugins_folder"].endswith("/plugins/current")
        assert cfg["webserver"]["flower_url"] == f"https://{base}.21:5555"
        assert int(cfg["worker"]["shutdown_grace"]) < 900
        # The runtime account only: the migration account is in migrate.env.
        assert f"db-migration-secret-{sample}" not in env_text(rendered[sample] / host)


def env_text(folder: Path) -> str:
    return (folder / "flowsched.env").read_text()


@pytest.mark.parametrize("sample", SAMPLES)
def test_services_listen_on_the_cluster_address(rendered: dict[str, Path], sample: str) -> None:
    """Webserver, Flower and each worker's log server bind the host's own address, not 0.0.0.0."""
    base = "10.77.0" if sample == "gmt8" else "192.168.50"
    for host, ip in {
        "master1": f"{base}.21",
        "worker1": f"{base}.31",
        "worker2": f"{base}.32",
    }.items():
        cfg = read_cfg(rendered[sample] / host / "flowsched.cfg")
        assert cfg["webserver"]["bind"] == f"{ip}:8081"
        assert cfg["flower"]["host"] == ip
        assert cfg["worker"]["log_server_host"] == ip


@pytest.mark.parametrize("sample", SAMPLES)
def test_each_unit_gets_the_health_check_of_its_table_entry(
    rendered: dict[str, Path], sample: str
) -> None:
    """The `health` field of the table of services, resolved per host as health.yml probes it:
    the webserver over https against the cluster CA, the scheduler's plain-HTTP /metrics,
    Flower's port (an HTTP check where the inventory overrides it), the worker's ping."""
    base = "10.77.0" if sample == "gmt8" else "192.168.50"
    for host, ip in {"master1": f"{base}.21", "worker2": f"{base}.32"}.items():
        probes = json.loads((rendered[sample] / host / "health-probes.json").read_text())
        by_unit = {probe.pop("unit"): probe for probe in probes}
        assert set(by_unit) == set(LONG_RUNNING)
        assert by_unit["flow-webserver.service"] == {
            "url": f"https://{ip}:8081/api/v1/health",
            "ca_path": "/etc/flowsched/tls/ca.pem",
        }
        assert by_unit["flow-scheduler.service"] == {"url": f"http://{ip}:9110/metrics"}
        flower = (
            {"url": f"https://{ip}:5555/healthcheck", "ca_path": "/etc/flowsched/tls/ca.pem"}
            # worker2's own overrides replace the group's whole, Flower's check too.
            if (sample, host) == ("shanghai", "master1")
            else {"address": ip, "port": 5555}
        )
        assert by_unit["flow-flower.service"] == flower
        command = by_unit["flow-worker.service"]["command"]
        assert command[:5] == [
            "/usr/local/sbin/flowsched-run",
            "celery",
            "--app=flowsched.celery.app",
            "inspect",
            "ping",
        ]
        assert command[-1] == f"--destination={ip}@{ip}"


@pytest.mark.parametrize("sample", SAMPLES)
def test_migrations_use_their_own_account(rendered: dict[str, Path], sample: str) -> None:
    base = "10.77.0" if sample == "gmt8" else "192.168.50"
    migrate = read_env(rendered[sample] / "master1" / "flowsched-migrate.env")
    assert migrate["FLOWSCHED__DATABASE__SQL_ALCHEMY_CONN"] == (
        f"mysql+mysqldb://flowsched_migrate:db-migration-secret-{sample}@{base}.11:3306/"
        "flowsched?charset=utf8mb4"
    )


def test_timezone_is_per_inventory(rendered: dict[str, Path]) -> None:
    zones = {
        read_cfg(rendered[s] / "master1" / "flowsched.cfg")["core"]["default_timezone"]
        for s in SAMPLES
    }
    assert zones == {"Etc/GMT-8", "Asia/Shanghai"}


def test_log_cleanup_uses_the_retention(rendered: dict[str, Path]) -> None:
    service = unit_settings(rendered["gmt8"] / "worker1" / "flow-log-cleanup.service")
    assert all(
        "-mtime +30" in line and "/data1/flowsched/logs" in line for line in service["ExecStart"]
    )
    timer = unit_settings(rendered["gmt8"] / "worker1" / "flow-log-cleanup.timer")
    assert timer["Unit"] == ["flow-log-cleanup.service"] and timer["Persistent"] == ["true"]


def test_flowsched_run_is_valid_shell(rendered: dict[str, Path]) -> None:
    for script in ("flowsched-run", "flowsched-cli"):
        result = subprocess.run(
            ["sh", "-n", str(rendered["gmt8"] / "master1" / script)], capture_output=True, text=True
        )
        assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("sample", SAMPLES)
def test_database_server_settings(rendered: dict[str, Path], sample: str) -> None:
    base = "10.77.0" if sample == "gmt8" else "192.168.50"
    cnf = configparser.ConfigParser(interpolation=None)
    cnf.read_string((rendered[sample] / "db1" / "60-flowsched.cnf").read_text())
    mysqld = cnf["mysqld"]
    assert mysqld["explicit_defaults_for_timestamp"] == "1"
    assert mysqld["character-set-server"] == "utf8mb4"
    assert mysqld["bind-address"] == f"{base}.11"
    sql = (rendered[sample] / "db1" / "flowsched-db.sql").read_text()
    grants = {
        line.split(" TO ")[1].rstrip(";"): line.split(" ON ")[0].removeprefix("GRANT ").split(", ")
        for line in sql.splitlines()
        if line.startswith("GRANT ")
    }
    # One runtime account per app host's address, one migration account per scheduler host.
    app = [f"{base}.21", f"{base}.31", f"{base}.32"]
    runtime = {f"'flowsched'@'{ip}'": ["SELECT", "INSERT", "UPDATE", "DELETE"] for ip in app}
    assert grants == runtime | {
        f"'flowsched_migrate'@'{base}.21'": grants.get(f"'flowsched_migrate'@'{base}.21'")
    }
    migration = grants[f"'flowsched_migrate'@'{base}.21'"]
    assert {"CREATE", "ALTER", "DROP", "INDEX"} <= set(migration)
    assert not any("ALL" in p or "GRANT" in p for privileges in grants.values() for p in privileges)
    assert " ON `flowsched`.* TO " in sql and "*.*" not in sql
    assert f"IDENTIFIED BY 'db-secret-{sample}'" in sql
    assert f"IDENTIFIED BY 'db-migration-secret-{sample}'" in sql


@pytest.mark.parametrize("sample", SAMPLES)
def test_broker_never_evicts_and_persists(rendered: dict[str, Path], sample: str) -> None:
    base = "10.77.0" if sample == "gmt8" else "192.168.50"
    conf = {}
    for line in (rendered[sample] / "broker1" / "redis.conf").read_text().splitlines():
        if line and not line.startswith("#"):
            key, _, value = line.partition(" ")
            conf.setdefault(key, []).append(value)
    assert conf["maxmemory-policy"] == ["noeviction"]
    assert conf["requirepass"] == [f"broker-secret-{sample}"]
    assert conf["bind"] == [f"127.0.0.1 {base}.12"]
    assert conf["appendonly"] == ["yes"] and len(conf["save"]) == 3


@pytest.mark.parametrize("sample", SAMPLES)
def test_rendered_config_loads_in_the_package(rendered: dict[str, Path], sample: str) -> None:
    """flowsched.cfg and flowsched.env of every host load with the package's own
    loader: a key the package does not know (e.g. a removed option still
    rendered by the role) or a bad value fails here, not on the hosts."""
    from flowsched.config import OPTIONS, load_config

    for host in APP_HOSTS:
        folder = rendered[sample] / host
        env = read_env(folder / "flowsched.env")
        env["FLOWSCHED_HOME"] = str(folder)
        conf = load_config(folder / "flowsched.cfg", environ=env)
        assert conf.source == folder / "flowsched.cfg"
        cfg = read_cfg(folder / "flowsched.cfg")
        for section in cfg.sections():
            for key in cfg[section]:
                assert key in OPTIONS[section], f"{host}: [{section}] {key} is not a package option"
        assert conf.core.executor == "celery"
        assert conf.core.default_timezone == SAMPLES[sample][0]
        assert conf.celery.broker_url.startswith("redis://")
        assert conf.database.sql_alchemy_conn.startswith("mysql+mysqldb://")


@pytest.mark.parametrize("sample", SAMPLES)
def test_worker_and_scheduler_units_limit_memory_and_tasks(
    rendered: dict[str, Path], sample: str
) -> None:
    """MemoryMax and TasksMax bound the tasks (service table entries, overridable per host)."""
    limits = {}
    for host, unit in [
        ("worker1", "flow-worker.service"),
        ("worker2", "flow-worker.service"),
        ("master1", "flow-scheduler.service"),
    ]:
        settings = unit_settings(rendered[sample] / host / unit)
        limits[host] = (settings["MemoryMax"], settings["TasksMax"])
    custom = (["6G"], ["512"]) if sample == "shanghai" else (["80%"], ["4096"])
    assert limits == {
        "worker1": (["80%"], ["4096"]),
        "worker2": custom,
        "master1": (["80%"], ["4096"]),
    }


def firewall_rules(path: Path) -> dict[int, set[str]]:
    """{TCP port: source addresses} of the `ip saddr { ... } tcp dport N accept` lines."""
    rules: dict[int, set[str]] = {}
    for line in path.read_text().splitlines():
        match = re.match(r"\s*ip saddr \{ (.+) \} tcp dport (\d+) accept$", line)
        if match:
            rules[int(match[2])] = {s.strip() for s in match[1].split(",")}
    return rules


@pytest.mark.parametrize("sample", SAMPLES)
def test_firewall_opens_each_port_to_the_groups_that_need_it(
    rendered: dict[str, Path], sample: str
) -> None:
    base = "10.77.0" if sample == "gmt8" else "192.168.50"
    app = {f"{base}.21", f"{base}.31", f"{base}.32"}
    ssh = {"127.0.0.0/8"}  # firewall_control_networks of the sample inventories
    expected = {
        "db1": {22: ssh, 3306: app},
        "broker1": {22: ssh, 6379: app},
        "master1": {22: ssh, 8081: {"0.0.0.0/0"}, 5555: {"0.0.0.0/0"}},
        "worker1": {22: ssh, 8793: {f"{base}.21"}},
        "worker2": {22: ssh, 8793: {f"{base}.21"}},
    }
    for host, rules in expected.items():
        path = rendered[sample] / host / "nftables-flowsched.nft"
        assert firewall_rules(path) == rules, host
        text = path.read_text()
        assert "policy drop;" in text and "flush ruleset" not in text
        # nft itself accepts the file (checked, not applied).
        check = subprocess.run(
            ["nft", "--check", "--file", str(path)], capture_output=True, text=True, timeout=60
        )
        assert check.returncode == 0, check.stderr
        unit = subprocess.run(
            ["systemd-analyze", "verify", str(rendered[sample] / host / "flow-firewall.service")],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert unit.returncode == 0 and unit.stderr.strip() == "", unit.stderr


def test_units_are_sandboxed_to_the_ok_band(rendered: dict[str, Path]) -> None:
    """`systemd-analyze security` of the rendered units: scheduler, webserver and Flower
    in the OK band or better; the worker (running arbitrary tasks) is printed."""
    levels = {}
    for host, unit in [
        ("master1", "flow-scheduler.service"),
        ("master1", "flow-webserver.service"),
        ("master1", "flow-flower.service"),
        ("worker1", "flow-worker.service"),
    ]:
        result = subprocess.run(
            [
                "systemd-analyze",
                "security",
                "--offline=true",
                "--no-pager",
                str(rendered["gmt8"] / host / unit),
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
        match = re.search(r"Overall exposure level for \S+: ([0-9.]+) ([A-Z]+)", result.stdout)
        assert match, result.stdout + result.stderr
        levels[unit] = (float(match[1]), match[2])
    print("systemd-analyze security exposure:", levels)
    for unit in ("flow-scheduler.service", "flow-webserver.service", "flow-flower.service"):
        assert levels[unit][1] in {"OK", "SAFE"}, levels
    assert levels["flow-worker.service"][0] < 5.0, levels


FIREWALL_HOSTS = {"db1": 11, "broker1": 12, "master1": 21, "worker1": 31, "outsider": 99}


@pytest.fixture
def firewalled_hosts(rendered: dict[str, Path]):
    """The gmt8 sample's hosts as network namespaces on a bridge, each with its rendered
    firewall loaded and its services' ports listening; `outsider` is in no group and has no
    firewall. Yields a probe(from_host, to_host, port) -> 'open' | 'dropped' | 'refused'."""
    tag = f"{os.getpid() % 100000}"
    bridge = f"fsfw{tag}"
    namespaces = {host: f"fsfw{tag}-{host}" for host in FIREWALL_HOSTS}
    listeners: list[subprocess.Popen] = []

    def sh(*args: str) -> None:
        subprocess.run(args, check=True, capture_output=True, text=True, timeout=30)

    try:
        sh("ip", "link", "add", bridge, "type", "bridge")
        sh("ip", "link", "set", bridge, "up")
        for index, (host, ns) in enumerate(namespaces.items()):
            sh("ip", "netns", "add", ns)
            outer, inner = f"fsfw{tag}h{index}", f"fsfw{tag}n{index}"
            sh("ip", "link", "add", outer, "type", "veth", "peer", "name", inner)
            sh("ip", "link", "set", outer, "master", bridge, "up")
            sh("ip", "link", "set", inner, "netns", ns)
            sh("ip", "-n", ns, "addr", "add", f"10.77.0.{FIREWALL_HOSTS[host]}/24", "dev", inner)
            sh("ip", "-n", ns, "link", "set", inner, "up")
            sh("ip", "-n", ns, "link", "set", "lo", "up")
            rules = rendered["gmt8"] / host / "nftables-flowsched.nft"
            if rules.exists():
                sh("ip", "netns", "exec", ns, "nft", "--file", str(rules))
        for host, port in [("db1", 3306), ("broker1", 6379), ("worker1", 8793), ("master1", 8081)]:
            listeners.append(
                subprocess.Popen(
                    [
                        "ip",
                        "netns",
                        "exec",
                        namespaces[host],
                        sys.executable,
                        "-c",
                        LISTENER,
                        f"10.77.0.{FIREWALL_HOSTS[host]}",
                        str(port),
                    ],
                    stdout=subprocess.PIPE,
                    text=True,
                )
            )
        for listener in listeners:  # each prints once it listens
            assert listener.stdout is not None and listener.stdout.readline().strip() == "listening"

        def probe(source: str, target: str, port: int) -> str:
            result = subprocess.run(
                [
                    "ip",
                    "netns",
                    "exec",
                    namespaces[source],
                    sys.executable,
                    "-c",
                    PROBE,
                    f"10.77.0.{FIREWALL_HOSTS[target]}",
                    str(port),
                ],
                capture_output=True,
                text=True,
                timeout=30,
            )
            return result.stdout.strip()

        yield probe
    finally:
        for listener in listeners:
            listener.kill()
            listener.wait(timeout=10)
        for ns in namespaces.values():
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=30)
        subprocess.run(["ip", "link", "del", bridge], capture_output=True, timeout=30)


LISTENER = """
import socket, sys
server = socket.create_server((sys.argv[1], int(sys.argv[2])))
print("listening", flush=True)
while True:
    server.accept()[0].close()
"""

PROBE = """
import socket, sys
try:
    socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=2).close()
    print("open")
except TimeoutError:
    print("dropped")
except ConnectionRefusedError:
    print("refused")
"""


def test_firewall_rules_hold_on_a_real_network(firewalled_hosts) -> None:
    """The rendered rules loaded by nft in network namespaces: each port answers the groups
    that need it and drops the rest (a drop times out; a closed port would refuse)."""
    probe = firewalled_hosts
    assert probe("worker1", "db1", 3306) == "open"
    assert probe("worker1", "broker1", 6379) == "open"
    assert probe("master1", "worker1", 8793) == "open"
    assert probe("outsider", "master1", 8081) == "open"
    # A host outside the cluster cannot reach Redis nor MariaDB.
    assert probe("outsider", "broker1", 6379) == "dropped"
    assert probe("outsider", "db1", 3306) == "dropped"
    # Only webserver hosts fetch task logs; a worker cannot reach MariaDB's port on the broker.
    assert probe("db1", "worker1", 8793) == "dropped"
    assert probe("worker1", "broker1", 3306) == "dropped"
    # Control: without a firewall a closed port refuses instead of dropping.
    assert probe("worker1", "outsider", 3306) == "refused"
