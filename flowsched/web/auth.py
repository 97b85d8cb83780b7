"""Who is asking: session login for pages, bearer tokens for the API, and role checks.

The session cookie holds the user id and a key derived from the password
hash; the user is re-read on every request, so deleting a user or resetting a
password ends their sessions at once.
"""

from __future__ import annotations

import math
import unicodedata
from collections.abc import Callable
from functools import wraps
from typing import Any, TypeVar, cast
from urllib.parse import urlsplit

from flask import (
    Blueprint,
    abort,
    flash,
    g,
    redirect,
    render_template,
    request,
    session,
    url_for,
)
from werkzeug.wrappers import Response

from flowsched.db.engine import session_scope
from flowsched.operations import audit
from flowsched.web import csrf, throttle
from flowsched.web.users import (
    Role,
    UserInfo,
    authenticate,
    end_sessions,
    load_user,
    user_for_token,
)

bp = Blueprint("auth", __name__)

F = TypeVar("F", bound=Callable[..., Any])


def current_user() -> UserInfo | None:
    return cast(UserInfo | None, g.get("user"))


def load_session_user() -> None:
    """Before each page request: set ``g.user`` from the session cookie, or None."""
    g.user = None
    user_id = session.get("uid")
    if user_id is None:
        return
    user = load_user(int(user_id))
    if user is None or session.get("key") != user.session_key:
        session.clear()
        return
    g.user = user


def load_token_user() -> None:
    """Before each API request: set ``g.user`` from ``Authorization: Bearer <token>``."""
    g.user = None
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        g.user = user_for_token(token.strip())
    if g.user is None:
        abort(401, description="a valid API token is required: Authorization: Bearer <token>")


def actor() -> str:
    """The name written to the audit log for an action by the current user."""
    user = current_user()
    source = "api" if request.blueprint == "api" else "web"
    return f"{source}:{user.username}" if user else source


def can(role: Role) -> bool:
    user = current_user()
    return user is not None and user.role.allows(role)


def require(role: Role) -> Callable[[F], F]:
    """Refuse the view with 403 unless the user's role includes ``role``."""

    def decorator(view: F) -> F:
        @wraps(view)
        def wrapped(*args: Any, **kwargs: Any) -> Any:
            if not can(role):
                abort(403, description=f"this needs the {role.value} role")
            return view(*args, **kwargs)

        return cast(F, wrapped)

    return decorator


def login_redirect() -> Response:
    target = request.full_path if request.method == "GET" else request.path
    return redirect(url_for("auth.login", next=target.rstrip("?")))


def same_origin_path(target: str | None) -> str | None:
    """``target`` if it is a path on this site, else None: an open redirect helps phishing.

    Control characters are removed first, as browsers do (a slash, a tab, then
    ``/evil.com`` is ``//evil.com`` to them: another host); then only a path that
    starts with one slash, has no backslash (browsers read one as a slash), no
    scheme and no host is accepted.
    """
    if not target:
        return None
    cleaned = "".join(ch for ch in target if unicodedata.category(ch) != "Cc").strip()
    if not cleaned.startswith("/") or cleaned.startswith("//") or "\\" in cleaned:
        return None
    parts = urlsplit(cleaned)
    if parts.scheme or parts.netloc:
        return None
    return cleaned


def _safe_next(target: str | None) -> str:
    return same_origin_path(target) or url_for("pages.dags")


def _audit(event: str, username: str) -> None:
    with session_scope() as session:
        audit(session, event, actor=f"web:{username}", extra={"address": throttle.client_address()})


@bp.route("/login", methods=["GET", "POST"])
def login() -> Any:
    if request.method == "POST":
        username = request.form.get("username", "")
        address = throttle.client_address()
        wait = throttle.seconds_locked(username, address)
        if wait > 0:
            seconds = math.ceil(wait)
            flash(f"Too many failed logins: try again in {seconds} s.", "error")
            page = render_template("login.html", next=request.form.get("next"), username=username)
            return page, 429, {"Retry-After": str(seconds)}
        user = authenticate(username, request.form.get("password", ""))
        if user is None:
            throttle.record_failure(username, address)
        else:
            throttle.record_success(user.username, address)
            session.clear()  # no fixation: nothing from before login survives
            session["uid"] = user.id
            session["key"] = user.session_key
            session.permanent = True
            csrf.rotate()
            return redirect(_safe_next(request.form.get("next")))
        flash("Wrong username or password.", "error")
        return render_template("login.html", next=request.form.get("next"), username=username), 401
    if current_user() is not None:
        return redirect(_safe_next(request.args.get("next")))
    return render_template("login.html", next=request.args.get("next"), username="")


@bp.route("/logout", methods=["POST"])
def logout() -> Response:
    """Ends every session of the user, not just this cookie: a copied cookie dies too."""
    user = current_user()
    if user is not None:
        end_sessions(user.id)
        _audit("logout", user.username)
    session.clear()
    flash("Logged out.", "info")
    return redirect(url_for("auth.login"))
