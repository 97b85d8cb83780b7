"""CSRF protection for every form: one secret per session, checked on every unsafe request.

A before-request hook checks all POSTs of the HTML blueprints, so no form can
forget it; templates put :func:`csrf_token` in a hidden field. The REST API
authenticates with bearer tokens only (never the cookie), so a forged
cross-site request carries no credentials there and needs no check.
"""

from __future__ import annotations

import hmac
import secrets

from flask import abort, request, session

FIELD = "csrf_token"
HEADER = "X-CSRF-Token"
SESSION_KEY = "_csrf"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def csrf_token() -> str:
    """This session's token, created on first use."""
    token = session.get(SESSION_KEY)
    if not token:
        token = secrets.token_urlsafe(32)
        session[SESSION_KEY] = token
    return token


def rotate() -> None:
    """A fresh token, e.g. at login, so a token seen before login is worthless after."""
    session[SESSION_KEY] = secrets.token_urlsafe(32)


def check_csrf() -> None:
    if request.method in SAFE_METHODS:
        return
    expected = session.get(SESSION_KEY)
    sent = request.form.get(FIELD) or request.headers.get(HEADER)
    if not expected or not sent or not hmac.compare_digest(expected, sent):
        abort(400, description="The form's CSRF token is missing or stale: reload the page.")
