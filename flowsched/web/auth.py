"""Who is asking: session login for pages, bearer tokens for the API, and role checks.

The session cookie holds the user id and a key derived from the password
hash; the user is re-read on every request, so deleting a user or resetting a
password ends their sessions at once.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import Any, TypeVar, cast

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

from flowsched.web import csrf
from flowsched.web.users import Role, UserInfo, authenticate, load_user, user_for_token

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


def _safe_next(target: str | None) -> str:
    """Only same-site paths: an open redirect after login would help phishing."""
    if target and target.startswith("/") and not target.startswith("//") and "\\" not in target:
        return target
    return url_for("pages.dags")


@bp.route("/login", methods=["GET", "POST"])
def login() -> Any:
    if request.method == "POST":
        username = request.form.get("username", "")
        user = authenticate(username, request.form.get("password", ""))
        if user is not None:
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
    session.clear()
    flash("Logged out.", "info")
    return redirect(url_for("auth.login"))
