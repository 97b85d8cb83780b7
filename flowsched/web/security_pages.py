"""Pages about who did what and with which keys: the audit log, API tokens, one's password.

``/audit`` (admin) reads the audit log, filtered like ``GET /api/v1/eventLogs``.
``/tokens`` lists the user's API tokens with their last use and expiry, creates
one (shown once: it is never stored, nor put in the cookie) and revokes one;
an admin sees and may revoke everyone's. ``/account/password`` changes one's
own password, ending every other session of the user.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from flask import Blueprint, abort, flash, redirect, render_template, request, session, url_for

from flowsched.db.engine import session_scope
from flowsched.web import csrf
from flowsched.web.audit_log import AuditFilter, audit_page, known_events, user_of
from flowsched.web.auth import actor, can, current_user, require
from flowsched.web.users import (
    Role,
    UserError,
    authenticate,
    create_token,
    list_tokens,
    load_user,
    reset_password,
    revoke_token,
)
from flowsched.web.views import page_args

bp = Blueprint("security", __name__)

MAX_TOKEN_DAYS = 3650


def audit_filter() -> AuditFilter:
    """The filters of the page and the API: ``user``, ``dag_id``, ``event``."""
    return AuditFilter(
        user=request.args.get("user", "").strip() or None,
        dag_id=request.args.get("dag_id", "").strip() or None,
        event=request.args.get("event", "").strip() or None,
    )


@bp.route("/audit")
@require(Role.ADMIN)
def audit_log() -> Any:
    number, size = page_args()
    wanted = audit_filter()
    with session_scope(read_only=True) as session:
        rows, page = audit_page(session, wanted, number, size)
        events = known_events(session)
    return render_template(
        "audit.html", rows=rows, page=page, wanted=wanted, events=events, user_of=user_of
    )


def _tokens_page(new_token: str | None = None, error: str | None = None, status: int = 200) -> Any:
    user = current_user()
    assert user is not None
    everyone = can(Role.ADMIN)
    tokens = list_tokens(None if everyone else user.username)
    page = render_template(
        "tokens.html", tokens=tokens, everyone=everyone, new_token=new_token, error=error
    )
    return page, status


@bp.route("/tokens")
def tokens() -> Any:
    return _tokens_page()


def _lifetime(raw: str) -> timedelta | None:
    if not raw.strip():
        return None
    try:
        days = int(raw)
    except ValueError:
        raise UserError(f"expires in: {raw!r} is not a whole number of days") from None
    if not 1 <= days <= MAX_TOKEN_DAYS:
        raise UserError(f"expires in: use 1 to {MAX_TOKEN_DAYS} days, or leave it empty")
    return timedelta(days=days)


@bp.route("/tokens", methods=["POST"])
def create() -> Any:
    user = current_user()
    assert user is not None
    description = request.form.get("description", "").strip() or None
    try:
        lifetime = _lifetime(request.form.get("expires_in_days", ""))
        token = create_token(user.username, description, lifetime, actor=actor())
    except UserError as exc:
        return _tokens_page(error=str(exc), status=400)
    return _tokens_page(new_token=token, status=201)


@bp.route("/tokens/<int:token_id>/revoke", methods=["POST"])
def revoke(token_id: int) -> Any:
    user = current_user()
    assert user is not None
    try:
        owner = None if can(Role.ADMIN) else user.username
        revoked = revoke_token(token_id, owner=owner, actor=actor())
    except UserError as exc:
        abort(404, description=str(exc))
    flash(f"Revoked token {token_id} of {revoked.username}.", "success")
    return redirect(url_for("security.tokens"))


@bp.route("/account/password", methods=["POST"])
def change_password() -> Any:
    """Change one's own password: every other session of the user ends, this one goes on."""
    user = current_user()
    assert user is not None
    new = request.form.get("new_password", "")
    try:
        if authenticate(user.username, request.form.get("current_password", "")) is None:
            raise UserError("the current password is wrong")
        if new != request.form.get("confirm_password", ""):
            raise UserError("the new password and its confirmation differ")
        reset_password(user.username, new, actor=actor())
    except UserError as exc:
        return _tokens_page(error=f"Password not changed: {exc}", status=400)
    changed = load_user(user.id)
    assert changed is not None
    session["key"] = changed.session_key  # a new key for this browser only
    csrf.rotate()
    flash("Password changed; every other session of yours has ended.", "success")
    return redirect(url_for("security.tokens"))
