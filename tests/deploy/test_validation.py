"""Bad input stops a play at its start, naming the variable, before any host is contacted.

The sample hosts point at 127.0.0.1:9 over SSH, where nothing listens: any
task that needed a host would fail as unreachable. The validation plays need
no host, so a bad setting must fail there, and the play that prepares the
hosts must never start."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from tests.deploy.conftest import HERE, Run, tool

NO_CONTACT = [
    "-e",
    "ansible_connection=ssh",
    "-e",
    "ansible_host=127.0.0.1",
    "-e",
    "ansible_port=9",
]
FIRST_CHANGING_PLAY = "PLAY [Prepare every host"


def site(
    run: Run,
    *args: str,
    inventory: Path = HERE / "inventories" / "gmt8",
    playbook: str = "site.yml",
):
    return run(
        tool("ansible-playbook"), "-i", str(inventory), playbook, *NO_CONTACT, *args, timeout=120
    )


def test_valid_settings_pass_validation_and_reach_the_hosts(run: Run) -> None:
    """Control: with sound settings the run gets past validation to the first host contact."""
    result = site(run)
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert FIRST_CHANGING_PLAY in output, output
    before, after = output.split(FIRST_CHANGING_PLAY, 1)
    assert "fatal:" not in before and "fatal:" in after


def test_rotating_fernet_keys_pass_validation(run: Run) -> None:
    from flowsched.crypto import generate_key

    keys = f"{generate_key()}, {generate_key()}"
    result = site(run, "-e", json.dumps({"flowsched_fernet_key": keys}))
    output = result.stdout + result.stderr
    assert FIRST_CHANGING_PLAY in output, output
    assert "must be one or more Fernet keys" not in output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["-e", "flowsched_timezone=Mars/Olympus"],
            "flowsched_timezone=Mars/Olympus is not a timezone name",
        ),
        (
            ["-e", "flowsched_timezone=../../../etc/passwd"],
            "flowsched_timezone=../../../etc/passwd is not a timezone name",
        ),
        (
            ["-e", "flowsched_timezone=Etc/GMT+99"],
            "flowsched_timezone=Etc/GMT+99 is not a timezone name",
        ),
        (
            ["-e", "flowsched_webserver_port=70000"],
            "flowsched_webserver_port=70000 is not a TCP port",
        ),
        (["-e", "flowsched_flower_port=0"], "flowsched_flower_port=0 is not a TCP port"),
        (["-e", "flowsched_broker_port=redis"], "flowsched_broker_port"),
        (
            ["-e", "flowsched_db_password=CHANGE-ME-database-password"],
            "flowsched_db_password must be set",
        ),
        (["-e", "flowsched_host_ip=worker.example.org"], "flowsched_host_ip=worker.example.org"),
        (["-e", "flowsched_worker_stop_timeout=300"], "flowsched_worker_stop_timeout (300) >"),
        (["-e", "flowsched_executor=threads"], "flowsched_executor"),
        (
            ["-e", '{"flowsched_services_overrides": {"webserver": {"stop_timeout": 60}}}'],
            "webserver.stop_timeout (60) > flowsched_webserver_timeout",
        ),
        (
            ["-e", '{"flowsched_services_overrides": {"worker": {"state": "gone", "colour": 1}}}'],
            "flowsched_services_units.worker (flowsched_services_table merged with",
        ),
        (
            ["-e", '{"flowsched_services_overrides": {"sheduler": {"state": "stopped"}}}'],
            "Unknown service name in flowsched_services_names",
        ),
        (
            ["-e", '{"flowsched_services_overrides": {"flower": {"health": {"port": 0}}}}'],
            "flowsched_services_units.flower.health",
        ),
        (
            [
                "-e",
                '{"flowsched_services_overrides": {"worker": {"health": {"command": "ping"}}}}',
            ],
            "flowsched_services_units.worker.health",
        ),
        (["-e", "mariadb_port=99999"], "Need mariadb_port 1-65535 (99999)"),
        (["-e", '{"mariadb_user_privileges": ["ALL PRIVILEGES"]}'], "without global or ALL"),
        (["-e", "redis_maxmemory=lots"], "redis_maxmemory like 2gb (lots)"),
        (["-e", '{"redis_extra_settings": {"maxmemory-policy": "lru"}}'], "always noeviction"),
        (
            ["-e", f"flowsched_fernet_key={'A' * 43}=,not-a-key"],
            "flowsched_fernet_key must be one or more Fernet keys",
        ),
        (
            ["-e", "flowsched_flower_basic_auth="],
            "master1 is in flowsched_flower, so flowsched_flower_basic_auth must be set",
        ),
        (
            ["-e", '{"mariadb_user_hosts": ["10.20.0.%"]}'],
            "(127.0.0.1) connects to the database as the runtime account, but none of its "
            "host patterns mariadb_user_hosts=['10.20.0.%']",
        ),
        (
            ["-e", '{"mariadb_migration_user_hosts": ["10.77.0.3_"]}'],
            "connects to the database as the migration account, but none of its host "
            "patterns mariadb_migration_user_hosts=['10.77.0.3_']",
        ),
        (["-e", "mariadb_user_host=%"], "mariadb_user_host is now mariadb_user_hosts"),
        (
            ["-e", '{"mariadb_user_privileges": ["SELECT", "CREATE"]}'],
            "mariadb_user_privileges may hold only SELECT, INSERT, UPDATE, DELETE",
        ),
        (
            ["-e", '{"firewall_control_networks": []}'],
            "firewall_control_networks must list the networks Ansible connects from",
        ),
        (
            ["-e", '{"firewall_web_sources": ["everyone"]}'],
            "must be an IPv4 address or CIDR",
        ),
        (
            ["-e", '{"firewall_metrics_rules": [{"name": "metrics", "group": "monitoring"}]}'],
            "needs a name, a group, a TCP port",
        ),
        (
            ["-e", "flowsched_worker_roll_batch=all"],
            'or a percentage 1%-100% like "25%" (got all)',
        ),
        (["-e", "flowsched_service_health_timeout=1"], "flowsched_service_health_timeout >= 5 (1)"),
        (["-e", "mariadb_backup_keep=0"], "mariadb_backup_keep >= 1 (0)"),
        (["-e", "mariadb_restore_dump=../etc/shadow"], "mariadb_restore_dump (../etc/shadow)"),
    ],
    ids=[
        "timezone",
        "timezone-path",
        "timezone-offset",
        "port-range",
        "port-zero",
        "port-type",
        "placeholder-secret",
        "host-ip",
        "stop-timeout",
        "executor",
        "webserver-stop",
        "service-entry",
        "service-name",
        "health-port",
        "health-command",
        "mariadb-port",
        "mariadb-privileges",
        "redis-maxmemory",
        "redis-eviction",
        "fernet-key",
        "flower-login",
        "db-user-hosts",
        "db-migration-user-hosts",
        "db-user-host-renamed",
        "db-runtime-ddl",
        "firewall-control-networks",
        "firewall-web-sources",
        "firewall-row",
        "roll-batch",
        "health-timeout",
        "backup-keep",
        "restore-dump-path",
    ],
)
def test_bad_setting_fails_before_any_host_is_contacted(
    run: Run, args: list[str], message: str
) -> None:
    result = site(run, *args)
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert message in output, output
    assert FIRST_CHANGING_PLAY not in output, output
    assert "UNREACHABLE" not in output


@pytest.mark.parametrize(
    ("section", "key", "message"),
    [
        ("vars", "flowsched_secret_key", "missing required arguments: flowsched_secret_key"),
        ("children", "flowsched_broker", "Inventory group flowsched_broker is missing or empty"),
    ],
    ids=["secret", "group"],
)
def test_missing_inventory_entry_is_named(
    run: Run, tmp_path: Path, section: str, key: str, message: str
) -> None:
    inventory = yaml.safe_load((HERE / "inventories" / "gmt8" / "hosts.yml").read_text())
    del inventory["all"][section][key]
    path = tmp_path / "hosts.yml"
    path.write_text(yaml.safe_dump(inventory))
    result = site(run, inventory=path)
    output = result.stdout + result.stderr
    assert message in output, output
    assert FIRST_CHANGING_PLAY not in output


@pytest.mark.parametrize(
    ("playbook", "args", "message"),
    [
        (
            "playbooks/services.yml",
            ["-e", "flowsched_component=db", "-e", "flowsched_state=stopped"],
            "flowsched_component=db",
        ),
        ("playbooks/services.yml", ["-e", "flowsched_component=worker"], "flowsched_state="),
        ("playbooks/delete-dag.yml", [], "-e dag_id=DAG_ID"),
        ("playbooks/delete-dag.yml", ["-e", "dag_id=x; rm -rf /"], "-e dag_id=DAG_ID"),
    ],
    ids=["services-component", "services-state", "delete-dag-missing", "delete-dag-shell"],
)
def test_playbook_arguments_are_checked(
    run: Run, playbook: str, args: list[str], message: str
) -> None:
    # These checks run on the control machine: with hosts unreachable they must
    # still be the reason the run stops.
    result = site(run, *args, "-e", "ansible_connection=local", playbook=playbook)
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert message in output, output


def test_production_inventory_placeholders_are_refused(run: Run, tmp_path: Path) -> None:
    """The example inventory decrypts with the documented example password, and
    validation refuses its CHANGE-ME secrets."""
    password = tmp_path / "vault-password"
    password.write_text("flowsched-example-vault\n")
    result = run(
        tool("ansible-playbook"),
        "-i",
        "inventories/production",
        "site.yml",
        *NO_CONTACT,
        "--vault-password-file",
        str(password),
        timeout=120,
    )
    output = result.stdout + result.stderr
    assert "flowsched_db_password must be set" in output, output
    assert "CHANGE-ME-database-password" not in output
    assert FIRST_CHANGING_PLAY not in output


def test_hosts_disagreeing_on_a_cluster_setting_are_named(run: Run, tmp_path: Path) -> None:
    """A host_vars override of the cluster timezone would split the cluster's clocks."""
    inventory = yaml.safe_load((HERE / "inventories" / "gmt8" / "hosts.yml").read_text())
    inventory["all"]["children"]["flowsched_workers"]["hosts"]["worker2"]["flowsched_timezone"] = (
        "UTC"
    )
    path = tmp_path / "hosts.yml"
    path.write_text(yaml.safe_dump(inventory))
    result = site(run, inventory=path)
    output = result.stdout + result.stderr
    assert "worker2 has a different timezone than db1 (UTC instead of Etc/GMT-8)" in output, output
    assert FIRST_CHANGING_PLAY not in output


def test_a_host_with_another_fernet_key_is_named_without_showing_keys(
    run: Run, tmp_path: Path
) -> None:
    """Tasks on that worker could not decrypt what the others stored."""
    from flowsched.crypto import generate_key

    shared, other = generate_key(), generate_key()
    inventory = yaml.safe_load((HERE / "inventories" / "gmt8" / "hosts.yml").read_text())
    inventory["all"]["vars"]["flowsched_fernet_key"] = shared
    inventory["all"]["children"]["flowsched_workers"]["hosts"]["worker2"][
        "flowsched_fernet_key"
    ] = other
    path = tmp_path / "hosts.yml"
    path.write_text(yaml.safe_dump(inventory))
    result = site(run, inventory=path)
    output = result.stdout + result.stderr
    assert "worker2 has a different secrets than db1" in output, output
    assert shared not in output and other not in output
    assert FIRST_CHANGING_PLAY not in output


def validate_only(run: Run, inventory: str):
    """playbooks/validate.yml alone on a sample inventory (contacts no host)."""
    return run(
        tool("ansible-playbook"),
        "-i",
        str(HERE / "inventories" / inventory),
        "playbooks/validate.yml",
        *NO_CONTACT,
        timeout=120,
    )


def test_effective_settings_are_shown_per_host(run: Run) -> None:
    result = validate_only(run, "shanghai")
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    shown = [line.strip().strip('",') for line in output.splitlines() if "timezone Asia/" in line]
    assert shown and all("timezone Asia/Shanghai" in line for line in shown), output
    assert any("roles workers" in line for line in shown), output


@pytest.mark.parametrize(
    ("args", "message", "secret"),
    [
        (["-e", "flowsched_secret_key=a"], "flowsched_secret_key is too weak", None),
        (
            ["-e", "flowsched_secret_key=lab-only-secret-key-not-for-production"],
            "flowsched_secret_key is too weak",
            "lab-only-secret-key-not-for-production",
        ),
        (
            ["-e", "flowsched_db_password=lab-only-db-password"],
            "flowsched_db_password is too weak",
            "lab-only-db-password",
        ),
        (
            ["-e", "flowsched_broker_password=short-pw"],
            "flowsched_broker_password is too weak",
            None,
        ),
        (
            ["-e", "flowsched_flower_basic_auth=admin:lab-only-flower"],
            "flowsched_flower_basic_auth is too weak",
            "lab-only-flower",
        ),
        (["-e", "flowsched_secret_key=" + "ab" * 20], "flowsched_secret_key is too weak", None),
    ],
    ids=["key-short", "key-lab", "db-lab", "broker-short", "flower-lab", "key-repetitive"],
)
def test_weak_or_published_secrets_are_refused(
    run: Run, args: list[str], message: str, secret: str | None
) -> None:
    result = site(run, *args)
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert message in output, output
    assert FIRST_CHANGING_PLAY not in output, output
    if secret:
        assert secret not in output  # the refused value is never printed


def test_validate_and_the_package_refuse_the_same_published_values() -> None:
    from flowsched.secret_policy import (
        KNOWN_EXAMPLE_VALUES,
        MIN_SECRET_KEY_LENGTH,
        MIN_SERVICE_PASSWORD_LENGTH,
    )

    role_vars = yaml.safe_load((HERE.parents[1] / "roles/flowsched/vars/main.yml").read_text())
    assert set(role_vars["flowsched_published_secrets"]) == KNOWN_EXAMPLE_VALUES
    assert role_vars["flowsched_secret_key_min_length"] == MIN_SECRET_KEY_LENGTH
    assert role_vars["flowsched_password_min_length"] == MIN_SERVICE_PASSWORD_LENGTH
    # every secret printed in the lab inventory before it generated its own is on the list
    assert {
        "lab-only-db-password",
        "lab-only-secret-key-not-for-production",
    } <= KNOWN_EXAMPLE_VALUES


def test_the_lab_inventory_generates_strong_secrets_that_pass_validation(
    run: Run, tmp_path: Path
) -> None:
    """The lab publishes no secret: each is generated on the control machine on first use."""
    secrets_dir = tmp_path / "lab-secrets"
    result = run(
        tool("ansible-playbook"),
        "-i",
        "inventories/lab",
        "playbooks/validate.yml",
        "-e",
        f"flowsched_lab_secrets_dir={secrets_dir}",
        timeout=120,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    generated = {path.name: path.read_text().strip() for path in secrets_dir.iterdir()}
    assert set(generated) >= {
        "db_password",
        "db_migration_password",
        "broker_password",
        "secret_key",
        "flower_password",
    }
    assert len(generated["secret_key"]) >= 32
    assert len(set(generated.values())) == len(generated)  # each its own


@pytest.mark.parametrize(
    ("host", "setting", "value", "message"),
    [
        (
            "worker2",
            "flowsched_timezone",
            "Mars/Olympus",
            "worker2: flowsched_timezone=Mars/Olympus is not a timezone name",
        ),
        (
            "worker1",
            "flowsched_worker_concurrency",
            "many",
            "worker1: argument 'flowsched_worker_concurrency' is of type",
        ),
        (
            "worker2",
            "flowsched_worker_stop_timeout",
            300,
            "worker2: Need flowsched_worker_stop_timeout (300) > flowsched_worker_shutdown_grace",
        ),
        (
            "worker1",
            "flowsched_host_ip",
            "worker.example.org",
            "flowsched_host_ip=worker.example.org on worker1",
        ),
        (
            "worker2",
            "flowsched_services_overrides",
            {"webserver": {"stop_timeout": 60}},
            "worker2: Need flowsched_services_units.webserver.stop_timeout (60) > "
            "flowsched_webserver_timeout",
        ),
        (
            "worker1",
            "worker_ping_timeout",
            1,
            "worker1: Need worker_drain_timeout >= 0 (600) and worker_ping_timeout >= 5 (1)",
        ),
        (
            "worker2",
            "firewall_web_sources",
            ["everyone"],
            "worker2: With firewall_enabled, firewall_control_networks must list",
        ),
    ],
    ids=[
        "timezone",
        "argument-spec",
        "stop-timeout",
        "host-ip",
        "services-table",
        "worker",
        "firewall",
    ],
)
def test_a_bad_setting_of_one_host_is_named_with_its_host(
    run: Run, tmp_path: Path, host: str, setting: str, value: object, message: str
) -> None:
    """Each check runs once for the fleet (one task on the control machine, not
    one per host); a failure still names the host whose setting is wrong, and
    only that host, and stops the run before any host is contacted."""
    inventory = yaml.safe_load((HERE / "inventories" / "gmt8" / "hosts.yml").read_text())
    inventory["all"]["children"]["flowsched_workers"]["hosts"][host][setting] = value
    path = tmp_path / "hosts.yml"
    path.write_text(yaml.safe_dump(inventory))
    result = site(run, inventory=path)
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert message in output, output
    failure = next(line for line in output.splitlines() if message in line)
    others = {"db1", "broker1", "master1", "worker1", "worker2"} - {host}
    assert not any(f"{other}:" in failure or f" {other} " in failure for other in others), failure
    assert FIRST_CHANGING_PLAY not in output, output
    assert "UNREACHABLE" not in output


def test_the_checks_run_once_for_the_fleet(run: Run) -> None:
    """The settings of every host are checked by one task per check, for the
    first host of the play: no other host has a validation task result."""
    result = validate_only(run, "gmt8")
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    recap = {
        line.split()[0]: line
        for line in output.split("PLAY RECAP", 1)[1].splitlines()
        if ": ok=" in line
    }
    # db1 runs the checks of the first play and MariaDB's, broker1 Redis's;
    # the other hosts have no task of their own.
    assert set(recap) == {"db1", "broker1"}, output
    assert "Validating arguments against arg spec 'main'" not in output
    assert "Validating arguments against arg spec 'validate' - Check the cluster" not in output
