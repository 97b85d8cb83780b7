"""Typed configuration: one INI file plus ``FLOWSCHED__SECTION__KEY`` overrides.

Every option is declared once in :data:`OPTIONS` with its type, default and
meaning; that table is the documentation (``flowsched config show --defaults``
prints it). Values are parsed and validated when the config is loaded, so a
typo fails at start with the key named, not hours later in a task.
"""

from __future__ import annotations

import configparser
import difflib
import os
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flowsched.exceptions import ConfigError

ENV_PREFIX = "FLOWSCHED__"


def flowsched_home() -> Path:
    return Path(os.environ.get("FLOWSCHED_HOME", "~/flowsched")).expanduser()


def config_path() -> Path:
    explicit = os.environ.get("FLOWSCHED_CONFIG")
    return Path(explicit).expanduser() if explicit else flowsched_home() / "flowsched.cfg"


def _parse_bool(raw: str) -> bool:
    lowered = raw.strip().lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off"}:
        return False
    raise ValueError(f"expected a boolean (true/false), got {raw!r}")


def _parse_timezone(raw: str) -> str:
    from flowsched.timezone import parse_timezone

    parse_timezone(raw)
    return raw


def _parse_executor(raw: str) -> str:
    value = raw.strip().lower()
    if value not in {"local", "celery"}:
        raise ValueError(f"expected 'local' or 'celery', got {raw!r}")
    return value


def _parse_cookie_secure(raw: str) -> str:
    value = raw.strip().lower()
    if value not in {"auto", "true", "false"}:
        raise ValueError(f"expected 'auto', 'true' or 'false', got {raw!r}")
    return value


def _parse_port(raw: str) -> int:
    port = int(raw)
    if not 1 <= port <= 65535:
        raise ValueError(f"port must be between 1 and 65535, got {port}")
    return port


def _positive(kind: Callable[[str], Any]) -> Callable[[str], Any]:
    def parse(raw: str) -> Any:
        value = kind(raw)
        if value <= 0:
            raise ValueError(f"must be positive, got {raw!r}")
        return value

    return parse


def _non_negative_int(raw: str) -> int:
    value = int(raw)
    if value < 0:
        raise ValueError(f"must be 0 or more, got {raw!r}")
    return value


def _path(raw: str) -> str:
    return str(Path(os.path.expandvars(raw)).expanduser())


def _text(raw: str) -> str:
    return raw


def _secret_key(raw: str) -> str:
    from flowsched.secret_policy import check_secret_key

    return check_secret_key(raw)


def _optional_path(raw: str) -> str:
    return _path(raw) if raw.strip() else ""


def _parse_fernet_keys(raw: str) -> str:
    """Comma-separated Fernet keys (first encrypts, all decrypt); empty: no secrets storage.

    Checked here so a malformed key fails at start, not when a secret is first stored;
    the message names which key of the list is wrong, never the key itself.
    """
    from flowsched.crypto import check_fernet_keys

    check_fernet_keys(raw)
    return raw.strip()


def _parse_alert_spec(raw: str) -> str:
    from flowsched.notifications.fallback import parse_fallback

    parse_fallback(raw)  # ValueError naming the bad item
    return raw.strip()


@dataclass(frozen=True)
class Option:
    parse: Callable[[str], Any]
    default: str
    doc: str
    secret: bool = False


_HOME = "${FLOWSCHED_HOME}"

OPTIONS: dict[str, dict[str, Option]] = {
    "core": {
        "dags_folder": Option(_path, f"{_HOME}/dags", "Folder scanned recursively for DAG files."),
        "plugins_folder": Option(_path, f"{_HOME}/plugins", "Folder of plugin modules."),
        "default_timezone": Option(
            _parse_timezone,
            "Etc/GMT-8",
            "Zone for naive start dates, cron schedules and every displayed time. "
            "Etc/GMT-8 is UTC+8: POSIX inverts the sign of Etc/ zones.",
        ),
        "executor": Option(_parse_executor, "local", "'local' (subprocess pool) or 'celery'."),
        "parallelism": Option(_positive(int), "8", "Tasks the local executor runs at once."),
        "dagbag_import_timeout": Option(
            _positive(float), "30", "Seconds one DAG file may take to import."
        ),
        "dagbag_import_memory_limit": Option(
            _non_negative_int,
            "1024",
            "MiB of memory one DAG file's import may take on top of the importing process "
            "(address space, RLIMIT_AS); a file that needs more is an import error. 0: no limit.",
        ),
        "venv_cache_path": Option(
            _path,
            f"{_HOME}/venvs",
            "Where PythonVirtualenvOperator / @task.virtualenv keep the virtualenvs they "
            "build, one per set of requirements (by hash), reused by later tries; an "
            "operator's own venv_cache_path takes precedence.",
        ),
        "dags_are_paused_at_creation": Option(
            _parse_bool,
            "true",
            "Whether a newly discovered DAG starts paused (Airflow's default: true), so a "
            "catchup=True DAG creates no runs until someone unpauses it. A DAG's "
            "is_paused_upon_creation argument overrides it. `flowsched standalone` writes false.",
        ),
        "hostname_callable": Option(
            _text, "", "'module:function' returning the hostname recorded on task instances."
        ),
        "secret_key": Option(
            _secret_key,
            "",
            "Signs log-server tokens and web sessions; required with celery. At least 32 "
            "characters and not a published example value (`openssl rand -hex 32`).",
            True,
        ),
        "max_xcom_size": Option(_positive(int), "65536", "Largest XCom value in bytes (JSON)."),
        "max_map_length": Option(
            _positive(int),
            "1024",
            "Most task instances one mapped task may expand into (Airflow's default: 1024); "
            "a longer list or dict to map over fails with the lengths in the error.",
        ),
        "outage_tolerance": Option(
            _positive(float),
            "900",
            "Seconds scheduler, workers, DAG processor and tries ride out an unreachable "
            "metadata database or broker (logged once, retried with backoff) before giving up.",
        ),
        "dag_run_conf_overrides_params": Option(
            _parse_bool,
            "true",
            "As in Airflow: a run's conf is laid over the DAG's and task's params, so "
            "`{{ params.x }}` sees the value the run was triggered with. False: params "
            "are the DAG file's values whatever the conf says.",
        ),
        "max_run_conf_size": Option(
            _positive(int),
            "65536",
            "Largest run conf in bytes (compact JSON), checked wherever a run is triggered.",
        ),
        "fernet_key": Option(
            _parse_fernet_keys,
            "",
            "Fernet key(s) encrypting connection passwords, extras and variable values in the "
            "database; comma-separated to rotate (the first encrypts, every one decrypts). "
            "Empty: connections and variables cannot be stored in the database. "
            "Create one with `flowsched rotate-fernet-key --generate`.",
            True,
        ),
    },
    "secrets": {
        "files_folder": Option(
            _optional_path,
            "",
            "Folder of YAML/JSON files of connections and variables (the file backend), "
            "looked up after FLOWSCHED_CONN_/FLOWSCHED_VAR_ environment variables and "
            "before the database. Empty: no file backend.",
        ),
    },
    "database": {
        "sql_alchemy_conn": Option(
            _text,
            f"sqlite:///{_HOME}/flowsched.db",
            "SQLAlchemy URL; MySQL: mysql+mysqldb://user:pass@host:3306/db?charset=utf8mb4",
            True,
        ),
        "pool_size": Option(_positive(int), "5", "Connections kept per process (MySQL)."),
        "pool_recycle": Option(_positive(int), "1800", "Seconds before a connection is renewed."),
        "connect_timeout": Option(_positive(int), "10", "Seconds to wait for the database."),
        "ssl_ca": Option(
            _optional_path,
            "",
            "CA file (PEM) the MySQL/MariaDB server's certificate must chain to. Set: every "
            "connection uses TLS and checks the server's certificate and name (mysqlclient's "
            "ssl_mode VERIFY_IDENTITY). Empty: as the URL says.",
        ),
    },
    "logging": {
        "base_log_folder": Option(_path, f"{_HOME}/logs", "Where task logs are written."),
        "level": Option(_text, "INFO", "Log level of the components."),
    },
    "scheduler": {
        "loop_interval": Option(_positive(float), "1.0", "Longest idle sleep of the loop (s)."),
        "dag_dir_list_interval": Option(
            _positive(float), "30", "Seconds between scans of the DAG folder."
        ),
        "parsing_processes": Option(_positive(int), "2", "DAG files imported at once."),
        "min_file_process_interval": Option(
            _positive(float),
            "30",
            "Seconds after which an unchanged DAG file is imported again (a changed one is "
            "at the next scan): what a file's stamp cannot show, such as a module it imports.",
        ),
        "task_heartbeat_interval": Option(
            _positive(float), "5", "Seconds between heartbeats of a running task."
        ),
        "zombie_threshold": Option(
            _positive(float), "120", "A running task silent this long (s) is failed and retried."
        ),
        "task_queued_timeout": Option(
            _positive(float), "600", "A task queued this long (s) without starting is retried."
        ),
        "max_tis_per_query": Option(_positive(int), "512", "Tasks queued per loop at most."),
        "max_queued_reschedules": Option(
            _positive(int),
            "4",
            "Sensor pokes (mode=reschedule) sent to the executor only while fewer tries than "
            "this wait there unstarted: due pokes wait in the database instead, so a crowd of "
            "sensors never builds a queue that other tasks wait behind.",
        ),
        "max_lost_tries": Option(
            _non_negative_int,
            "3",
            "Times one task's try may be lost through no fault of its own (its worker died, "
            "or its message never reached a worker) and be re-queued without spending a "
            "retry; past it, a lost try counts as a failure.",
        ),
        "shutdown_grace": Option(
            _positive(float), "60", "Seconds a stopping scheduler waits for local tasks."
        ),
    },
    "celery": {
        "broker_url": Option(_text, "redis://127.0.0.1:6379/0", "Broker URL (Redis).", True),
        "result_backend": Option(
            _text, "", "Unused by default: task state lives in the metadata DB.", True
        ),
        "worker_concurrency": Option(_positive(int), "8", "Tasks one worker runs at once."),
        "default_queue": Option(_text, "default", "Queue of tasks that name none."),
        "visibility_timeout": Option(
            _positive(int), "21600", "Seconds before an unacked message is redelivered."
        ),
        "ssl_active": Option(
            _parse_bool,
            "false",
            "As in Airflow: talk to the Redis broker and result backend over TLS, checking "
            "the server's certificate against ssl_cacert (CERT_REQUIRED).",
        ),
        "ssl_key": Option(
            _optional_path, "", "Client key file (PEM) for the broker, if Redis asks for one."
        ),
        "ssl_cert": Option(
            _optional_path, "", "Client certificate file (PEM) for the broker, with ssl_key."
        ),
        "ssl_cacert": Option(
            _optional_path,
            "",
            "CA file (PEM) the broker's certificate must chain to; required with ssl_active.",
        ),
    },
    "worker": {
        "nodename": Option(_text, "", "Celery nodename; default {ip}@{ip}."),
        "log_server_port": Option(_parse_port, "8793", "Port of the worker's log server."),
        "log_server_host": Option(
            _text, "0.0.0.0", "Address the worker's log server listens on (all by default)."
        ),
        "log_server_ssl_cert": Option(
            _optional_path,
            "",
            "Certificate file (PEM) the worker's log server serves HTTPS with, with "
            "log_server_ssl_key. Empty: plain HTTP.",
        ),
        "log_server_ssl_key": Option(_optional_path, "", "Key file (PEM) of log_server_ssl_cert."),
        "log_server_ssl_ca": Option(
            _optional_path,
            "",
            "CA file (PEM) the webserver and `flowsched tasks log` check log servers' "
            "certificates (and host names) against; set: logs are fetched over HTTPS.",
        ),
        "shutdown_grace": Option(
            _positive(float), "600", "Seconds a warm shutdown waits for running tasks."
        ),
    },
    "webserver": {
        "bind": Option(_text, "0.0.0.0:8081", "host:port gunicorn listens on."),
        "web_server_ssl_cert": Option(
            _optional_path,
            "",
            "As in Airflow: certificate file (PEM) the webserver (and Flower, and the "
            "webserver's /metrics port) serve HTTPS with, with web_server_ssl_key. "
            "Empty: plain HTTP.",
        ),
        "web_server_ssl_key": Option(_optional_path, "", "Key file (PEM) of web_server_ssl_cert."),
        "workers": Option(_positive(int), "4", "gunicorn worker processes."),
        "timeout": Option(_positive(int), "120", "gunicorn worker timeout (s)."),
        "flower_url": Option(_text, "", "Link to Flower from the workers page."),
        "log_tail_bytes": Option(
            _positive(int),
            "1048576",
            "Most bytes of a task log a page or an API answer shows: its end, marked "
            "truncated, with a download of the whole log.",
        ),
        "cookie_secure": Option(
            _parse_cookie_secure,
            "auto",
            "Secure flag of the session cookie: 'true' (HTTPS only), 'false', or 'auto' "
            "(set when the request came over HTTPS, directly or via a trusted proxy).",
        ),
        "login_failures_allowed": Option(
            _positive(int),
            "5",
            "Failed logins per user, and per client address, before logins are refused "
            "for a while (within login_failure_window).",
        ),
        "login_lock_seconds": Option(
            _positive(float),
            "30",
            "Seconds logins stay refused after the allowed failures; doubles with each "
            "further failure, up to login_lock_max_seconds.",
        ),
        "login_lock_max_seconds": Option(
            _positive(float), "900", "Longest refusal after repeated failed logins (s)."
        ),
        "login_failure_window": Option(
            _positive(float), "3600", "Failed logins older than this (s) no longer count."
        ),
    },
    "alerts": {
        "callback_timeout": Option(
            _positive(float),
            "60",
            "Seconds a task or DAG callback (or notifier) may run before it is abandoned "
            "and logged; a callback never changes a task's or run's state.",
        ),
        "on_failure": Option(
            _parse_alert_spec,
            "",
            "Notifiers told of every failed run, whatever its DAG says: space-separated "
            "'webhook:<url>', 'webhook-conn:<conn_id>' or "
            "'smtp:<conn_id>:<to>[,<to>...]' (see docs/alerts.md). Empty: none.",
            True,
        ),
    },
    "metrics": {
        "prometheus_on": Option(
            _parse_bool,
            "false",
            "Serve Prometheus metrics at /metrics on each component's own port (below). Off "
            "by default: the ports have no login, so open them to monitoring hosts only "
            "(the Ansible roles turn this on and the firewall limits who reaches it).",
        ),
        "prometheus_host": Option(_text, "0.0.0.0", "Address the /metrics ports listen on."),
        "scheduler_port": Option(_parse_port, "9110", "The scheduler's /metrics port."),
        "dag_processor_port": Option(_parse_port, "9111", "The DAG processor's /metrics port."),
        "worker_port": Option(_parse_port, "9112", "A Celery worker's /metrics port."),
        "webserver_port": Option(
            _parse_port,
            "9113",
            "The webserver's /metrics port: gunicorn listens there too, and any of its workers "
            "answers with the sum over all of them.",
        ),
        "collect_interval": Option(
            _positive(float),
            "5",
            "Seconds between the scheduler's reads of cluster-wide figures (tries by state, "
            "queue depths, pools, finished tries and runs) for metrics.",
        ),
        "statsd_on": Option(
            _parse_bool, "false", "Also send metrics to StatsD (UDP) under Airflow's names."
        ),
        "statsd_host": Option(_text, "localhost", "StatsD host."),
        "statsd_port": Option(_parse_port, "8125", "StatsD UDP port."),
        "statsd_prefix": Option(
            _text,
            "airflow",
            "Prefix of every StatsD name; Airflow's default, so existing dashboards work.",
        ),
    },
    "flower": {
        "host": Option(
            _text, "0.0.0.0", "Address Flower listens on (all by default; Airflow: flower_host)."
        ),
        "port": Option(_parse_port, "5555", "Flower's port."),
        "basic_auth": Option(_text, "", "user:password for Flower.", True),
    },
}

# Keys renamed since Airflow 1.10-era configs: still read, with a warning.
DEPRECATED_KEYS: dict[tuple[str, str], tuple[str, str]] = {
    ("celery", "celeryd_concurrency"): ("celery", "worker_concurrency"),
    ("celery", "celery_result_backend"): ("celery", "result_backend"),
}


class Section:
    """Attribute access to one section's parsed values: ``conf.core.executor``."""

    def __init__(self, name: str, values: Mapping[str, Any]) -> None:
        self._name = name
        self._values = dict(values)

    def __getattr__(self, key: str) -> Any:
        try:
            return self._values[key]
        except KeyError:
            raise AttributeError(f"no option [{self._name}] {key}") from None

    def items(self) -> list[tuple[str, Any]]:
        return list(self._values.items())


class Config:
    """The loaded configuration; sections are attributes."""

    def __init__(self, values: dict[str, dict[str, Any]], source: Path | None) -> None:
        self.source = source
        self._values = values
        for name, section in values.items():
            setattr(self, name, Section(name, section))

    def get(self, section: str, key: str) -> Any:
        return self._values[section][key]

    def as_dict(self, redact: bool = True) -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}
        for section, keys in self._values.items():
            out[section] = {}
            for key, value in keys.items():
                secret = OPTIONS[section][key].secret
                out[section][key] = "***" if (redact and secret and value) else value
        return out


def _unknown_key_error(where: str, section: str, key: str) -> ConfigError:
    if section not in OPTIONS:
        hint = difflib.get_close_matches(section, OPTIONS, n=1)
        extra = f" (did you mean [{hint[0]}]?)" if hint else ""
        return ConfigError(f"{where}: unknown section [{section}]{extra}")
    hint = difflib.get_close_matches(key, OPTIONS[section], n=1)
    extra = f" (did you mean '{hint[0]}'?)" if hint else ""
    return ConfigError(f"{where}: unknown key '{key}' in section [{section}]{extra}")


def _read_file(path: Path) -> dict[tuple[str, str], str]:
    parser = configparser.ConfigParser(interpolation=None)
    try:
        with path.open(encoding="utf-8") as handle:
            parser.read_file(handle)
    except configparser.Error as exc:
        raise ConfigError(f"{path}: cannot parse: {exc}") from exc
    raw: dict[tuple[str, str], str] = {}
    for section in parser.sections():
        for key, value in parser.items(section):
            raw[(section, key)] = value
    return raw


def _read_env(environ: Mapping[str, str]) -> dict[tuple[str, str], str]:
    raw: dict[tuple[str, str], str] = {}
    for name, value in environ.items():
        if not name.startswith(ENV_PREFIX):
            continue
        parts = name[len(ENV_PREFIX) :].split("__")
        if len(parts) != 2 or not all(parts):
            raise ConfigError(f"environment variable {name}: expected FLOWSCHED__SECTION__KEY")
        raw[(parts[0].lower(), parts[1].lower())] = value
    return raw


def _resolve_deprecated(raw: dict[tuple[str, str], str], where: str) -> dict[tuple[str, str], str]:
    resolved: dict[tuple[str, str], str] = {}
    for (section, key), value in raw.items():
        if (section, key) in DEPRECATED_KEYS:
            new_section, new_key = DEPRECATED_KEYS[(section, key)]
            warnings.warn(
                f"{where}: [{section}] {key} is deprecated, use [{new_section}] {new_key}",
                DeprecationWarning,
                stacklevel=3,
            )
            resolved.setdefault((new_section, new_key), value)
            continue
        if section not in OPTIONS or key not in OPTIONS[section]:
            raise _unknown_key_error(where, section, key)
        resolved[(section, key)] = value
    return resolved


def load_config(path: Path | None = None, environ: Mapping[str, str] | None = None) -> Config:
    """Read defaults, then the file (if any), then the environment; validate all."""
    environ = os.environ if environ is None else environ
    path = config_path() if path is None else path
    merged: dict[tuple[str, str], tuple[str, str]] = {}
    source: Path | None = None
    if path.exists():
        source = path
        for key, value in _resolve_deprecated(_read_file(path), str(path)).items():
            merged[key] = (value, str(path))
    for key, value in _resolve_deprecated(_read_env(environ), "environment").items():
        merged[key] = (
            value,
            f"environment variable {ENV_PREFIX}{key[0].upper()}__{key[1].upper()}",
        )

    home = str(Path(environ.get("FLOWSCHED_HOME", "~/flowsched")).expanduser())
    values: dict[str, dict[str, Any]] = {}
    for section, options in OPTIONS.items():
        values[section] = {}
        for key, option in options.items():
            raw, where = merged.get((section, key), (option.default, "default"))
            raw = raw.replace(_HOME, home)
            try:
                values[section][key] = option.parse(raw)
            except (ValueError, ConfigError) as exc:
                shown = "<hidden>" if option.secret else repr(raw)  # never print a secret
                raise ConfigError(f"{where}: [{section}] {key} = {shown}: {exc}") from exc
    if values["core"]["executor"] == "celery" and not values["core"]["secret_key"]:
        raise ConfigError(
            f"{source or 'config'}: [core] secret_key must be set when executor = celery "
            "(it signs log-server tokens shared by the cluster)"
        )
    _check_pairs(values, source)
    return Config(values, source)


# Options that only make sense together: (section, key, the keys it needs).
_NEEDS: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("webserver", "web_server_ssl_cert", ("web_server_ssl_key",)),
    ("webserver", "web_server_ssl_key", ("web_server_ssl_cert",)),
    ("worker", "log_server_ssl_cert", ("log_server_ssl_key",)),
    ("worker", "log_server_ssl_key", ("log_server_ssl_cert",)),
    ("celery", "ssl_active", ("ssl_cacert",)),
    ("celery", "ssl_cert", ("ssl_key",)),
    ("celery", "ssl_key", ("ssl_cert",)),
)


def _check_pairs(values: dict[str, dict[str, Any]], source: Path | None) -> None:
    """Options set without their partners fail at start, naming both."""
    where = source or "config"
    for section, key, needs in _NEEDS:
        if not values[section][key]:
            continue
        for other in needs:
            if not values[section][other]:
                raise ConfigError(
                    f"{where}: [{section}] {key} is set but [{section}] {other} is not"
                )


_current: Config | None = None


def get_config() -> Config:
    """The process-wide config, loaded on first use."""
    global _current
    if _current is None:
        _current = load_config()
    return _current


def set_config(config: Config | None) -> None:
    """Replace the process-wide config (tests, and the CLI after creating a home)."""
    global _current
    _current = config


REFERENCE_START = "<!-- config reference: generated from flowsched.config.OPTIONS -->"
REFERENCE_END = "<!-- end of config reference -->"


def render_reference() -> str:
    """The config reference of docs/contracts.md, generated from :data:`OPTIONS`.

    The table in the docs is this function's output between two markers
    (``scripts/gen-docs`` rewrites it, a test checks it), so the documented
    options can never drift from the ones the package reads.
    """

    def cell(text: str) -> str:
        return text.replace("|", "\\|").replace("\n", " ")

    lines = [
        REFERENCE_START,
        "| section | key | default | meaning |",
        "| --- | --- | --- | --- |",
    ]
    for section, options in OPTIONS.items():
        for key, option in options.items():
            default = option.default.replace(_HOME, "$FLOWSCHED_HOME")
            shown = f"`{cell(default)}`" if default else "(empty)"
            secret = " *Secret: redacted by `config show`.*" if option.secret else ""
            lines.append(f"| {section} | {key} | {shown} | {cell(option.doc)}{secret} |")
    renamed = ", ".join(
        f"`[{old[0]}] {old[1]}` → `[{new[0]}] {new[1]}`" for old, new in DEPRECATED_KEYS.items()
    )
    lines += ["", f"Old names still read, with a warning: {renamed}.", REFERENCE_END]
    return "\n".join(lines)


def replace_reference(document: str) -> str:
    """``document`` with the text between the reference markers regenerated."""
    start = document.index(REFERENCE_START)
    end = document.index(REFERENCE_END) + len(REFERENCE_END)
    return document[:start] + render_reference() + document[end:]


def render_defaults() -> str:
    """The documented default config file, as `flowsched config show --defaults` prints it."""
    lines: list[str] = []
    for section, options in OPTIONS.items():
        lines.append(f"[{section}]")
        for key, option in options.items():
            lines.append(f"# {option.doc}")
            lines.append(f"{key} = {option.default}")
        lines.append("")
    return "\n".join(lines)
