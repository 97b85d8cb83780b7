"""Users and API tokens: the one place passwords are hashed and tokens checked.

The CLI (``flowsched users ...``) and the webserver's login both go through
these functions. Passwords are stored as werkzeug scrypt hashes; API tokens are
random and only their SHA-256 is stored, so a leaked database leaks neither.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session
from werkzeug.security import check_password_hash, generate_password_hash

from flowsched.db.engine import session_scope
from flowsched.db.models import ApiToken, User
from flowsched.exceptions import FlowschedError
from flowsched.timezone import utcnow

MIN_PASSWORD_LENGTH = 8
TOKEN_PREFIX = "fst_"
TOKEN_TOUCH_EVERY = timedelta(minutes=1)
# Checked against when the username is unknown, so a wrong name costs as long as a wrong password.
_DUMMY_HASH = generate_password_hash("flowsched-timing-equaliser")


class Role(StrEnum):
    """What a user may do: each role includes everything the ones below it may."""

    VIEWER = "viewer"
    OP = "op"
    ADMIN = "admin"

    @property
    def rank(self) -> int:
        return list(Role).index(self)

    def allows(self, needed: Role) -> bool:
        return self.rank >= needed.rank


class UserError(FlowschedError):
    """A user command or login was refused; the message says why."""


@dataclass(frozen=True)
class UserInfo:
    """A user as the web layer sees it: no password hash leaves this module."""

    id: int
    username: str
    role: Role
    session_key: str

    @classmethod
    def of(cls, user: User) -> UserInfo:
        return cls(user.id, user.username, Role(user.role), session_key(user.password_hash))


def session_key(password_hash: str) -> str:
    """Changes with the password, so resetting a password ends that user's sessions."""
    return hashlib.sha256(password_hash.encode()).hexdigest()[:16]


def _check_role(role: str) -> Role:
    try:
        return Role(role)
    except ValueError:
        raise UserError(f"unknown role {role!r}: use one of admin, op, viewer") from None


def _check_password(password: str) -> None:
    if len(password) < MIN_PASSWORD_LENGTH:
        raise UserError(f"password too short: use at least {MIN_PASSWORD_LENGTH} characters")


def create_user(username: str, password: str, role: str) -> UserInfo:
    username = username.strip()
    if not username or len(username) > 100:
        raise UserError("username must be 1 to 100 characters")
    checked = _check_role(role)
    _check_password(password)
    with session_scope() as session:
        if session.scalar(select(User.id).where(User.username == username)) is not None:
            raise UserError(f"user '{username}' already exists (use users reset-password)")
        user = User(
            username=username,
            password_hash=generate_password_hash(password),
            role=checked.value,
            created_at=utcnow(),
        )
        session.add(user)
        session.flush()
        return UserInfo.of(user)


def _get(session: Session, username: str) -> User:
    user = session.scalar(select(User).where(User.username == username))
    if user is None:
        raise UserError(f"no user '{username}'")
    return user


def delete_user(username: str) -> None:
    with session_scope() as session:
        session.delete(_get(session, username))


def reset_password(username: str, password: str) -> None:
    """Set a new password; the user's open web sessions stop working."""
    _check_password(password)
    with session_scope() as session:
        _get(session, username).password_hash = generate_password_hash(password)


def set_role(username: str, role: str) -> None:
    checked = _check_role(role)
    with session_scope() as session:
        _get(session, username).role = checked.value


@dataclass(frozen=True)
class UserRow:
    username: str
    role: str
    created_at: datetime
    last_login_at: datetime | None
    tokens: int


def list_users() -> list[UserRow]:
    with session_scope() as session:
        counts = dict(
            session.execute(select(ApiToken.user_id, func.count()).group_by(ApiToken.user_id)).all()
        )
        return [
            UserRow(u.username, u.role, u.created_at, u.last_login_at, counts.get(u.id, 0))
            for u in session.scalars(select(User).order_by(User.username))
        ]


def count_users() -> int:
    with session_scope() as session:
        return session.scalar(select(func.count()).select_from(User)) or 0


def authenticate(username: str, password: str) -> UserInfo | None:
    """The user if the password matches, else None; records the login time."""
    with session_scope() as session:
        user = session.scalar(select(User).where(User.username == username.strip()))
        if user is None:
            check_password_hash(_DUMMY_HASH, password)
            return None
        if not check_password_hash(user.password_hash, password):
            return None
        user.last_login_at = utcnow()
        return UserInfo.of(user)


def load_user(user_id: int) -> UserInfo | None:
    with session_scope() as session:
        user = session.get(User, user_id)
        return UserInfo.of(user) if user is not None else None


def _token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def create_token(username: str, description: str | None = None) -> str:
    """A new API token for the user; shown once, only its hash is kept."""
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    with session_scope() as session:
        user = _get(session, username)
        session.add(
            ApiToken(
                user_id=user.id,
                token_hash=_token_hash(token),
                description=description,
                created_at=utcnow(),
            )
        )
    return token


def revoke_tokens(username: str) -> int:
    with session_scope() as session:
        user = _get(session, username)
        return session.execute(delete(ApiToken).where(ApiToken.user_id == user.id)).rowcount


def user_for_token(token: str) -> UserInfo | None:
    with session_scope() as session:
        row = session.execute(
            select(ApiToken, User)
            .join(User, User.id == ApiToken.user_id)
            .where(ApiToken.token_hash == _token_hash(token))
        ).first()
        if row is None:
            return None
        api_token, user = row
        now = utcnow()
        # Record use at most once a minute: a busy client should not write on every call.
        if api_token.last_used_at is None or now - api_token.last_used_at > TOKEN_TOUCH_EVERY:
            api_token.last_used_at = now
        return UserInfo.of(user)
