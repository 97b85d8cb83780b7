"""Bad input stops a play at its start, naming the variable, before any host is contacted.

The sample hosts point at 127.0.0.1:9 over SSH, where nothing listens: any
task that needed a host would fail as unreachable. The validation plays need
no host, so a bad setting must fail there, and the play that prepares the
hosts must never start."""

from __future__ import annotations

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
            ["-e", "webserver_stop_timeout=60"],
            "webserver_stop_timeout (60) > flowsched_webserver_timeout",
        ),
        (["-e", "mariadb_port=99999"], "Need mariadb_port 1-65535 (99999)"),
        (["-e", '{"mariadb_user_privileges": ["ALL PRIVILEGES"]}'], "without global or ALL"),
        (["-e", "redis_maxmemory=lots"], "redis_maxmemory like 2gb (lots)"),
        (["-e", '{"redis_extra_settings": {"maxmemory-policy": "lru"}}'], "always noeviction"),
        (
            ["-e", "flowsched_flower_basic_auth="],
            "master1 is in flowsched_flower, so flowsched_flower_basic_auth must be set",
        ),
        (
            ["-e", "mariadb_user_host=10.20.0.%"],
            "(127.0.0.1) runs flowsched but the database user's host pattern "
            "mariadb_user_host='10.20.0.%'",
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
        "mariadb-port",
        "mariadb-privileges",
        "redis-maxmemory",
        "redis-eviction",
        "flower-login",
        "db-user-host",
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


def test_effective_settings_are_shown_per_host(run: Run) -> None:
    result = run(
        tool("ansible-playbook"),
        "-i",
        str(HERE / "inventories" / "shanghai"),
        "playbooks/validate.yml",
        *NO_CONTACT,
        timeout=120,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    shown = [line.strip().strip('",') for line in output.splitlines() if "timezone Asia/" in line]
    assert shown and all("timezone Asia/Shanghai" in line for line in shown), output
    assert any("roles workers" in line for line in shown), output
