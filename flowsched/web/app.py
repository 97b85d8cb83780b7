"""The Flask application factory: config, blueprints, template helpers, error pages.

``create_app()`` is what gunicorn serves (see :mod:`flowsched.web.server`).
The session is Flask's signed cookie, keyed by ``core.secret_key``, HTTP-only,
``SameSite=Lax`` and ``Secure`` as ``webserver.cookie_secure`` says.
"""

from __future__ import annotations

import json
import secrets
from datetime import datetime, timedelta
from typing import Any

from flask import Flask, request
from flask.sessions import SecureCookieSessionInterface

from flowsched import __version__
from flowsched.config import get_config
from flowsched.metrics.web import install_request_metrics
from flowsched.state import RunState, TaskState
from flowsched.timezone import default_timezone, display, format_offset, utcnow
from flowsched.web import auth, csrf, errors
from flowsched.web.users import Role

SESSION_LIFETIME = timedelta(hours=12)
LOGIN_REQUIRED = frozenset({"pages", "actions", "security"})


class _SessionInterface(SecureCookieSessionInterface):
    """Marks the cookie Secure per ``webserver.cookie_secure``: true, false or auto.

    ``auto`` follows the request: HTTPS directly, or through a proxy gunicorn
    trusts (``forwarded_allow_ips``) that sends ``X-Forwarded-Proto: https``.
    """

    def get_cookie_secure(self, app: Flask) -> bool:
        mode = app.config["FLOWSCHED_COOKIE_SECURE"]
        if mode == "auto":
            return request.is_secure
        return mode == "true"


def format_duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes}m {secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h {minutes:02d}m"


def _iso(value: datetime | None) -> str:
    return value.isoformat() if value else ""


def _since(value: datetime | None) -> str:
    if value is None:
        return "-"
    return format_duration((utcnow() - value).total_seconds()) + " ago"


def _template_globals() -> dict[str, Any]:
    zone = default_timezone()
    offset = format_offset(utcnow().astimezone(zone).utcoffset() or timedelta(0))
    return {"current_user": auth.current_user(), "timezone_label": f"{zone.key} (UTC{offset})"}


def _before_request() -> Any:
    """Pages and login need the session user and a CSRF check; the API has its own auth."""
    if request.blueprint == "api" or request.endpoint in (None, "static"):
        return None
    auth.load_session_user()
    if request.blueprint in LOGIN_REQUIRED and auth.current_user() is None:
        return auth.login_redirect()
    csrf.check_csrf()
    return None


def _security_headers(response: Any) -> Any:
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    response.headers.setdefault("X-Frame-Options", "DENY")
    response.headers.setdefault("Referrer-Policy", "same-origin")
    response.headers.setdefault(
        "Content-Security-Policy",
        "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
        "frame-ancestors 'none'; form-action 'self'",
    )
    return response


def create_app(secret_key: str | None = None, cookie_secure: str | None = None) -> Flask:
    """Build the app; ``secret_key`` defaults to ``core.secret_key`` (random if unset)."""
    from flowsched.web import (  # noqa: F401 (modules that register routes)
        actions,
        api,
        chart_pages,
        charts_api,
        secrets_api,
        secrets_pages,
        security_pages,
        views,
    )

    conf = get_config()
    app = Flask(__name__)
    app.config.update(
        SECRET_KEY=secret_key or conf.core.secret_key or secrets.token_hex(32),
        SESSION_COOKIE_NAME="flowsched_session",
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        PERMANENT_SESSION_LIFETIME=SESSION_LIFETIME,
        FLOWSCHED_COOKIE_SECURE=cookie_secure or conf.webserver.cookie_secure,
        MAX_CONTENT_LENGTH=2 * 1024 * 1024,
        JSON_SORT_KEYS=False,
    )
    app.session_interface = _SessionInterface()
    app.jinja_env.filters.update(
        dt=display,
        dt_seconds=lambda value: display(value, seconds=True),
        iso=_iso,
        since=_since,
        duration=format_duration,
        pretty_json=lambda value: json.dumps(value, indent=2, sort_keys=True),
    )
    # Globals, not a context processor: imported macros (forms) need them too.
    app.jinja_env.globals.update(
        RUN_STATES=list(RunState),
        TASK_STATES=list(TaskState),
        csrf_token=csrf.csrf_token,
        csrf_field=csrf.FIELD,
        can=auth.can,
        Role=Role,
        version=__version__,
    )
    app.context_processor(_template_globals)
    app.before_request(_before_request)
    app.after_request(_security_headers)
    app.register_blueprint(auth.bp)
    app.register_blueprint(views.bp)
    app.register_blueprint(actions.bp)
    app.register_blueprint(security_pages.bp)
    app.register_blueprint(api.bp)
    _register_plugin_views(app)
    errors.register(app)
    install_request_metrics(app)
    return app


def _register_plugin_views(app: Flask) -> None:
    """Plugin blueprints join the app behind the login; a broken one is reported, never fatal."""
    from flowsched.plugins import load_plugins

    def require_login() -> Any:
        return None if auth.current_user() is not None else auth.login_redirect()

    registry = load_plugins()
    for loaded in registry.plugins:
        for blueprint in loaded.plugin.blueprints:
            try:
                if require_login not in blueprint.before_request_funcs.get(None, []):
                    blueprint.before_request(require_login)
                app.register_blueprint(blueprint)
            except Exception as exc:  # a plugin's view must not take the webserver down
                registry.errors[f"{loaded.source} (view {blueprint.name})"] = repr(exc)
    app.jinja_env.globals["plugin_errors"] = registry.errors
