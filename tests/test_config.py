"""Configuration: file, environment overrides, validation, deprecations, time zone."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from flowsched.config import OPTIONS, load_config, render_defaults
from flowsched.exceptions import ConfigError
from flowsched.timezone import display, parse_timezone


def write(tmp_path, text):
    path = tmp_path / "flowsched.cfg"
    path.write_text(text)
    return path


def test_defaults_are_typed_and_documented(tmp_path):
    conf = load_config(tmp_path / "missing.cfg", environ={"FLOWSCHED_HOME": str(tmp_path)})
    assert conf.core.executor == "local"
    assert conf.core.default_timezone == "Etc/GMT-8"
    assert conf.worker.log_server_port == 8793
    assert conf.scheduler.zombie_threshold == 120.0
    assert conf.core.dags_folder == str(tmp_path / "dags")
    assert conf.database.sql_alchemy_conn == f"sqlite:///{tmp_path}/flowsched.db"
    text = render_defaults()
    for section, options in OPTIONS.items():
        assert f"[{section}]" in text
        for key in options:
            assert f"\n{key} = " in text


def test_file_then_environment_override(tmp_path):
    path = write(tmp_path, "[core]\nparallelism = 3\nexecutor = local\n")
    env = {"FLOWSCHED__CORE__PARALLELISM": "5", "FLOWSCHED__WEBSERVER__BIND": "127.0.0.1:9"}
    conf = load_config(path, environ=env)
    assert conf.core.parallelism == 5
    assert conf.webserver.bind == "127.0.0.1:9"


def test_unknown_key_names_file_section_key_and_suggests(tmp_path):
    path = write(tmp_path, "[core]\nparalelism = 3\n")
    with pytest.raises(ConfigError) as info:
        load_config(path, environ={})
    message = str(info.value)
    assert str(path) in message and "'paralelism'" in message and "[core]" in message
    assert "did you mean 'parallelism'" in message


def test_unknown_env_key_is_refused(tmp_path):
    with pytest.raises(ConfigError, match=r"FLOWSCHED__CORE__NOPE|unknown key 'nope'"):
        load_config(tmp_path / "none.cfg", environ={"FLOWSCHED__CORE__NOPE": "1"})


@pytest.mark.parametrize(
    ("section", "key", "value", "fragment"),
    [
        ("core", "parallelism", "many", "[core] parallelism"),
        ("core", "parallelism", "0", "must be positive"),
        ("worker", "log_server_port", "70000", "between 1 and 65535"),
        ("core", "executor", "kubernetes", "'local' or 'celery'"),
        ("core", "default_timezone", "Mars/Olympus", "unknown time zone"),
        ("core", "dags_are_paused_at_creation", "maybe", "boolean"),
    ],
)
def test_bad_values_name_the_key(tmp_path, section, key, value, fragment):
    path = write(tmp_path, f"[{section}]\n{key} = {value}\n")
    with pytest.raises(ConfigError) as info:
        load_config(path, environ={})
    assert fragment in str(info.value)
    assert str(path) in str(info.value)


def test_deprecated_airflow_keys_are_accepted_with_a_warning(tmp_path):
    path = write(
        tmp_path,
        "[celery]\nceleryd_concurrency = 12\ncelery_result_backend = redis://x/1\n",
    )
    with pytest.warns(DeprecationWarning, match="celeryd_concurrency is deprecated"):
        conf = load_config(path, environ={})
    assert conf.celery.worker_concurrency == 12
    assert conf.celery.result_backend == "redis://x/1"


def test_celery_needs_a_secret_key(tmp_path):
    path = write(tmp_path, "[core]\nexecutor = celery\n")
    with pytest.raises(ConfigError, match="secret_key"):
        load_config(path, environ={})


def test_etc_gmt_minus_8_is_utc_plus_8():
    zone = parse_timezone("Etc/GMT-8")
    moment = datetime(2026, 11, 24, 0, 0, tzinfo=UTC)
    assert moment.astimezone(zone).utcoffset() == timedelta(hours=8)
    assert display(moment, zone) == "2026-11-24 08:00 +08:00"
    # The opposite sign is the opposite offset: the POSIX inversion is real.
    assert moment.astimezone(parse_timezone("Etc/GMT+8")).utcoffset() == timedelta(hours=-8)


def test_secrets_are_redacted(tmp_path):
    env = {"FLOWSCHED__CELERY__BROKER_URL": "redis://:hunter2@h:6379/0"}
    conf = load_config(tmp_path / "none.cfg", environ=env)
    assert conf.as_dict()["celery"]["broker_url"] == "***"
    assert conf.as_dict(redact=False)["celery"]["broker_url"].endswith("6379/0")
