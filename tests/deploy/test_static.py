"""Static checks of the deployment: yamllint, ansible-lint (production), syntax, conventions."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from tests.deploy.conftest import HERE, REPO, Run, tool

DEPLOY_PATHS = ["site.yml", "playbooks", "roles", "inventories/production", "tests/deploy"]
PLAYBOOKS = [
    "site.yml",
    *sorted(str(p.relative_to(REPO)) for p in (REPO / "playbooks").glob("*.yml")),
]
ROLES = sorted(p.name for p in (REPO / "roles").iterdir() if p.is_dir())


def test_yamllint_is_clean(run: Run) -> None:
    result = run(
        tool("yamllint"), "--strict", "-c", ".yamllint", *DEPLOY_PATHS, ".yamllint", ".ansible-lint"
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_ansible_lint_production_profile_is_clean(run: Run) -> None:
    result = run(
        tool("ansible-lint"),
        "--offline",
        "--profile",
        "production",
        "site.yml",
        "playbooks",
        "roles",
        "inventories/production",
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "Profile 'production' was required, and it passed" in output, output


@pytest.mark.parametrize("playbook", PLAYBOOKS)
def test_playbook_syntax(run: Run, playbook: str) -> None:
    result = run(
        tool("ansible-playbook"),
        "-i",
        str(HERE / "inventories" / "gmt8"),
        "--syntax-check",
        playbook,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_site_and_playbooks_are_all_checked() -> None:
    names = {Path(p).name for p in PLAYBOOKS}
    assert {
        "site.yml",
        "upgrade.yml",
        "sync-dags.yml",
        "services.yml",
        "delete-dag.yml",
        "rollback.yml",
        "roll.yml",
        "backup.yml",
        "restore.yml",
    } <= names


def test_nothing_kills_hard() -> None:
    """Stops are SIGTERM plus a wait: no SIGKILL or kill -9 anywhere in the deployment."""
    offenders = []
    for folder in ("roles", "templates", "playbooks"):
        for path in (REPO / folder).rglob("*"):
            if path.is_file() and re.search(r"SIGKILL|kill\s+-9|kill\s+-KILL", path.read_text()):
                offenders.append(str(path.relative_to(REPO)))
    assert (REPO / "site.yml").read_text().count("SIGKILL") == 0
    assert offenders == []


def _documented_defaults(role: str) -> set[str]:
    """Variables of defaults/main.yml, including required ones documented as comments."""
    text = (REPO / "roles" / role / "defaults" / "main.yml").read_text()
    names = set(yaml.safe_load(text) or {})
    names |= set(re.findall(rf"^# ({re.escape(role)}_\w+):\s*$", text, re.M))
    return names


def _specs(role: str) -> dict[str, dict]:
    return yaml.safe_load((REPO / "roles" / role / "meta" / "argument_specs.yml").read_text())[
        "argument_specs"
    ]


def _spec_options(role: str) -> dict[str, dict]:
    """The options of the role's settings: its `main` entry point's, or for
    roles/flowsched (which has none, see below) its `deploy` entry point's."""
    specs = _specs(role)
    return specs["main" if "main" in specs else "deploy"]["options"]


def test_settings_are_validated_once_per_run_not_per_host() -> None:
    """Ansible validates an entry point's spec as the first task of the role on
    every host of every play that uses it. roles/flowsched (every role's
    dependency) has no `main` entry, and no role a `validate` entry: their
    tasks validate every host's settings against the spec in one task per run
    (flowsched_fleet_settings)."""
    assert "main" not in _specs("flowsched")
    assert [role for role in ROLES if "validate" in _specs(role)] == ["mariadb", "redis"]
    for role, checks, entry in [
        ("flowsched", "checks.yml", "deploy"),
        ("flowsched_services", "table.yml", "main"),
        ("worker", "checks.yml", "main"),
        ("firewall", "checks.yml", "main"),
    ]:
        path = REPO / "roles" / role / "tasks" / checks
        text = path.read_text()
        assert "flowsched_fleet_settings:" in text, path
        assert f".argument_specs.{entry}.options" in text, path


@pytest.mark.parametrize("role", ROLES)
def test_role_defaults_are_prefixed_documented_and_validated(role: str) -> None:
    defaults = _documented_defaults(role)
    options = _spec_options(role)
    assert defaults, f"role {role} documents no variable"
    assert all(name.startswith(f"{role}_") for name in defaults), sorted(defaults)
    only_specs, only_defaults = sorted(set(options) - defaults), sorted(defaults - set(options))
    assert not only_specs and not only_defaults, (
        f"{role}: only in argument_specs {only_specs}, only in defaults {only_defaults}"
    )


def test_required_secrets_have_no_default() -> None:
    options = _spec_options("flowsched")
    defaults = yaml.safe_load((REPO / "roles" / "flowsched" / "defaults" / "main.yml").read_text())
    for secret in (
        "flowsched_db_password",
        "flowsched_db_migration_password",
        "flowsched_broker_password",
        "flowsched_secret_key",
    ):
        assert options[secret]["required"] is True
        assert options[secret]["no_log"] is True
        assert secret not in defaults


def test_secret_tasks_hide_their_output() -> None:
    """Every task that renders or applies a secret has no_log."""
    checks = [
        ("roles/flowsched/tasks/config.yml", "Render flowsched.env (database and broker secrets)"),
        ("roles/flowsched/tasks/config.yml", "Render migrate.env (the migration database account)"),
        ("roles/mariadb/tasks/database.yml", "Create or update the database and accounts"),
        ("roles/redis/tasks/main.yml", "Configure Redis as the broker"),
    ]
    for path, name in checks:
        tasks = yaml.safe_load((REPO / path).read_text())
        task = next(t for t in tasks if t["name"] == name)
        assert task.get("no_log") is True, f"{path}: {name}"


def test_entry_points_skip_their_spec_only_after_the_fleet_validation() -> None:
    """`rolespec_validate: false` (no per-host spec check) only in playbooks
    that import validate.yml first, which validates every host in one task;
    roll.yml (and the worker's roll-batch.yml) only under those."""
    playbooks = [REPO / "site.yml", *(REPO / "playbooks").glob("*.yml")]
    tasks = list(REPO.glob("roles/*/tasks/*.yml"))
    skipping = {
        path.relative_to(REPO).as_posix()
        for path in playbooks + tasks
        if "rolespec_validate: false" in path.read_text()
    }
    assert skipping == {
        "site.yml",
        "playbooks/upgrade.yml",
        "playbooks/rollback.yml",
        "playbooks/roll.yml",
        "roles/worker/tasks/roll-batch.yml",
    }
    roll = re.compile(r"import_playbook: (playbooks/)?roll\.yml")
    validate = re.compile(r"import_playbook: (playbooks/)?validate\.yml")
    for path in playbooks:
        text = path.read_text()
        uses = [
            m.start() for m in (roll.search(text), re.search("rolespec_validate: false", text)) if m
        ]
        if uses and path.name != "roll.yml":
            first = validate.search(text)
            assert first and first.start() < min(uses), path
