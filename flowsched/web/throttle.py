"""Login throttling: after a few failed logins, refuse logins for a growing while.

Failures are counted per username and per client address in the database
(``login_failure``), so every gunicorn worker and every webserver host of the
cluster see the same count. Once ``webserver.login_failures_allowed`` failures
fall within ``login_failure_window``, logins for that user (or from that
address) are refused for ``login_lock_seconds``, doubled with each further
failure up to ``login_lock_max_seconds``. A refused attempt checks no password,
so guessing gains nothing while locked. Each failure is also logged with its
address and written to the audit log (event ``login_failed``).
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from flask import request
from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from flowsched.config import get_config
from flowsched.db.engine import session_scope
from flowsched.db.models import LoginFailure
from flowsched.operations import audit
from flowsched.timezone import utcnow

log = logging.getLogger(__name__)

USERNAME_LENGTH = 100
ADDRESS_LENGTH = 64


def client_address() -> str:
    """The peer address gunicorn saw (a proxy in front must be trusted by gunicorn)."""
    return (request.remote_addr or "unknown")[:ADDRESS_LENGTH]


def _name(username: str) -> str:
    return username.strip()[:USERNAME_LENGTH]


def _lock_left(count: int, last: datetime | None, now: datetime) -> float:
    conf = get_config().webserver
    if last is None or count < conf.login_failures_allowed:
        return 0.0
    doublings = min(count - conf.login_failures_allowed, 30)
    lock = min(conf.login_lock_seconds * 2**doublings, conf.login_lock_max_seconds)
    return max(0.0, (last + timedelta(seconds=lock) - now).total_seconds())


def seconds_locked(username: str, address: str) -> float:
    """How long logins for ``username`` or from ``address`` stay refused (0: not locked)."""
    now = utcnow()
    since = now - timedelta(seconds=get_config().webserver.login_failure_window)
    left = 0.0
    with session_scope(read_only=True) as session:
        for column, value in (
            (LoginFailure.username, _name(username)),
            (LoginFailure.address, address),
        ):
            count, last = session.execute(
                select(func.count(), func.max(LoginFailure.created_at)).where(
                    column == value, LoginFailure.created_at >= since
                )
            ).one()
            left = max(left, _lock_left(count, last, now))
    return left


def _forget_old(session: Session, now: datetime) -> None:
    window = timedelta(seconds=get_config().webserver.login_failure_window)
    session.execute(delete(LoginFailure).where(LoginFailure.created_at < now - window))


def record_failure(username: str, address: str) -> None:
    now = utcnow()
    name = _name(username)
    log.warning("failed login for user %r from %s", name, address)
    with session_scope() as session:
        _forget_old(session, now)
        session.add(LoginFailure(username=name, address=address, created_at=now))
        audit(session, "login_failed", actor=f"web:{name}", extra={"address": address})


def record_success(username: str, address: str) -> None:
    """A successful login clears the user's failures (not the address's: an attacker
    with an account of their own must not reset the count of the address they guess from)."""
    name = _name(username)
    with session_scope() as session:
        session.execute(delete(LoginFailure).where(LoginFailure.username == name))
        audit(session, "login", actor=f"web:{name}", extra={"address": address})
