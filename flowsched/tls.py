"""TLS settings of every link, derived from the config in one place.

Each link has its own options (Airflow's names where Airflow has them, see
docs/security.md), but they all mean the same: a CA file the peer's
certificate must chain to, and this host's certificate and key where it
serves. This module turns them into what each library wants (Celery's
``broker_use_ssl``, mysqlclient's ``ssl``, :mod:`ssl` contexts), so no
caller builds its own and none can forget to check the peer.

A file named by an option that cannot be read fails with the option named,
when the link is first used, not deep inside a handshake.
"""

from __future__ import annotations

import os
import ssl
from typing import Any

from flowsched.config import Config, get_config
from flowsched.exceptions import ConfigError


def _readable(path: str, option: str) -> str:
    if not os.access(path, os.R_OK):
        why = "does not exist" if not os.path.exists(path) else "is not readable by this user"
        raise ConfigError(f"{option} = {path}: the file {why}")
    return path


def broker_ssl(conf: Config | None = None) -> dict[str, Any] | None:
    """Celery's ``broker_use_ssl``/``redis_backend_use_ssl`` for Redis, or None (plain).

    The server's certificate is always checked (CERT_REQUIRED) against
    ``[celery] ssl_cacert``; the client certificate is sent only if configured.
    """
    conf = conf or get_config()
    celery = conf.celery
    if not celery.ssl_active:
        return None
    for url_option in ("broker_url", "result_backend"):
        url = getattr(celery, url_option)
        if url and not url.startswith(("redis://", "rediss://")):
            raise ConfigError(
                f"[celery] ssl_active is on but [celery] {url_option} is not a redis:// or "
                "rediss:// URL: TLS is supported for the Redis broker only"
            )
    settings: dict[str, Any] = {
        "ssl_cert_reqs": ssl.CERT_REQUIRED,
        "ssl_ca_certs": _readable(celery.ssl_cacert, "[celery] ssl_cacert"),
    }
    if celery.ssl_cert:
        settings["ssl_certfile"] = _readable(celery.ssl_cert, "[celery] ssl_cert")
        settings["ssl_keyfile"] = _readable(celery.ssl_key, "[celery] ssl_key")
    return settings


def mysql_connect_args(conf: Config | None = None) -> dict[str, Any]:
    """mysqlclient arguments that make a connection verify the server, or none."""
    ca = (conf or get_config()).database.ssl_ca
    if not ca:
        return {}
    return {
        "ssl": {"ca": _readable(ca, "[database] ssl_ca")},
        "ssl_mode": "VERIFY_IDENTITY",
    }


def server_context(cert: str, key: str, option: str) -> ssl.SSLContext:
    """A TLS server context for this host's certificate (TLS 1.2 at least)."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(_readable(cert, f"{option}_cert"), _readable(key, f"{option}_key"))
    except ssl.SSLError as exc:
        raise ConfigError(
            f"{option}_cert/_key = {cert}, {key}: not a certificate and its key: {exc}"
        ) from None
    return context


def log_server_context(conf: Config | None = None) -> ssl.SSLContext | None:
    """The worker log server's context, or None when it serves plain HTTP."""
    worker = (conf or get_config()).worker
    if not worker.log_server_ssl_cert:
        return None
    return server_context(
        worker.log_server_ssl_cert, worker.log_server_ssl_key, "[worker] log_server_ssl"
    )


def log_client_context(conf: Config | None = None) -> ssl.SSLContext | None:
    """The context log fetches check log servers with, or None for plain HTTP."""
    ca = (conf or get_config()).worker.log_server_ssl_ca
    if not ca:
        return None
    return ssl.create_default_context(cafile=_readable(ca, "[worker] log_server_ssl_ca"))


def web_server_files(conf: Config | None = None) -> tuple[str, str] | None:
    """(certificate, key) the webserver and Flower serve HTTPS with, or None."""
    web = (conf or get_config()).webserver
    if not web.web_server_ssl_cert:
        return None
    return (
        _readable(web.web_server_ssl_cert, "[webserver] web_server_ssl_cert"),
        _readable(web.web_server_ssl_key, "[webserver] web_server_ssl_key"),
    )
