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

from sqlalchemy import delete, func, select, update
from sqlalchemy.orm import Session
from werkzeug.security import check_password_hash, generate_password_hash

from flowsched.db.engine import session_scope
from flowsched.db.models import ApiToken, User
from flowsched.exceptions import FlowschedError
from flowsched.operations import audit
from flowsched.secret_policy import KNOWN_EXAMPLE_VALUES, MIN_PASSWORD_LENGTH
from flowsched.timezone import utcnow

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
        key = session_key(user.password_hash, user.session_generation or 0)
        return cls(user.id, user.username, Role(user.role), key)


def session_key(password_hash: str, generation: int = 0) -> str:
    """Changes with the password and the session generation, so a password change or
    a logout ends every session of that user, including cookies copied elsewhere."""
    return hashlib.sha256(f"{generation}:{password_hash}".encode()).hexdigest()[:16]


def _check_role(role: str) -> Role:
    try:
        return Role(role)
    except ValueError:
        raise UserError(f"unknown role {role!r}: use one of admin, op, viewer") from None


def _check_password(password: str, username: str) -> None:
    if len(password) < MIN_PASSWORD_LENGTH:
        raise UserError(f"password too short: use at least {MIN_PASSWORD_LENGTH} characters")
    if password.lower() in KNOWN_EXAMPLE_VALUES or password.strip().lower() == username.lower():
        raise UserError("password too easy to guess: it is the username or a well-known value")


def create_user(username: str, password: str, role: str, *, actor: str | None = None) -> UserInfo:
    username = username.strip()
    if not username or len(username) > 100:
        raise UserError("username must be 1 to 100 characters")
    checked = _check_role(role)
    _check_password(password, username)
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
        audit(session, "user_create", actor=actor, extra={"user": username, "role": checked.value})
        return UserInfo.of(user)


def _get(session: Session, username: str) -> User:
    user = session.scalar(select(User).where(User.username == username))
    if user is None:
        raise UserError(f"no user '{username}'")
    return user


def delete_user(username: str, *, actor: str | None = None) -> None:
    with session_scope() as session:
        session.delete(_get(session, username))
        audit(session, "user_delete", actor=actor, extra={"user": username})


def reset_password(username: str, password: str, *, actor: str | None = None) -> None:
    """Set a new password; every open web session of the user stops working."""
    _check_password(password, username)
    with session_scope() as session:
        user = _get(session, username)
        user.password_hash = generate_password_hash(password)
        user.session_generation = (user.session_generation or 0) + 1
        audit(session, "password_reset", actor=actor, extra={"user": username})


def end_sessions(user_id: int) -> None:
    """Log the user out everywhere: every session cookie issued so far stops working."""
    with session_scope() as session:
        session.execute(
            update(User)
            .where(User.id == user_id)
            .values(session_generation=User.session_generation + 1)
        )


def set_role(username: str, role: str, *, actor: str | None = None) -> None:
    checked = _check_role(role)
    with session_scope() as session:
        _get(session, username).role = checked.value
        audit(session, "role_set", actor=actor, extra={"user": username, "role": checked.value})


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


def create_token(
    username: str,
    description: str | None = None,
    expires_in: timedelta | None = None,
    *,
    actor: str | None = None,
) -> str:
    """A new API token for the user; shown once, only its hash is kept.

    With ``expires_in`` the token stops working that long from now.
    """
    if expires_in is not None and expires_in <= timedelta(0):
        raise UserError("a token's lifetime must be positive")
    if description is not None and len(description) > 255:
        raise UserError("a token's description must be at most 255 characters")
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    now = utcnow()
    with session_scope() as session:
        user = _get(session, username)
        session.add(
            ApiToken(
                user_id=user.id,
                token_hash=_token_hash(token),
                description=description,
                created_at=now,
                expires_at=now + expires_in if expires_in is not None else None,
            )
        )
        audit(
            session,
            "token_create",
            actor=actor,
            extra={"user": username, "description": description, "expires_in": str(expires_in)},
        )
    return token


@dataclass(frozen=True)
class TokenRow:
    """What may be shown about a token: never the token, nor its hash."""

    id: int
    username: str
    description: str | None
    created_at: datetime
    last_used_at: datetime | None
    expires_at: datetime | None

    @property
    def expired(self) -> bool:
        return self.expires_at is not None and self.expires_at <= utcnow()


def list_tokens(username: str | None = None) -> list[TokenRow]:
    """Every token (of ``username`` if given), newest first."""
    with session_scope() as session:
        query = select(ApiToken, User.username).join(User, User.id == ApiToken.user_id)
        if username is not None:
            query = query.where(ApiToken.user_id == _get(session, username).id)
        rows = session.execute(query.order_by(ApiToken.id.desc())).all()
        return [
            TokenRow(t.id, name, t.description, t.created_at, t.last_used_at, t.expires_at)
            for t, name in rows
        ]


def revoke_token(token_id: int, owner: str | None = None, *, actor: str | None = None) -> TokenRow:
    """Delete one token; with ``owner``, only if it is theirs (a user revoking their own)."""
    with session_scope() as session:
        row = session.execute(
            select(ApiToken, User.username)
            .join(User, User.id == ApiToken.user_id)
            .where(ApiToken.id == token_id)
        ).first()
        if row is None or (owner is not None and row[1] != owner):
            raise UserError(f"no API token {token_id}" + (f" of user '{owner}'" if owner else ""))
        token, name = row
        revoked = TokenRow(
            token.id,
            name,
            token.description,
            token.created_at,
            token.last_used_at,
            token.expires_at,
        )
        session.delete(token)
        audit(session, "token_revoke", actor=actor, extra={"user": name, "token_id": token_id})
        return revoked


def revoke_tokens(username: str, *, actor: str | None = None) -> int:
    with session_scope() as session:
        user = _get(session, username)
        count = session.execute(delete(ApiToken).where(ApiToken.user_id == user.id)).rowcount
        audit(session, "token_revoke", actor=actor, extra={"user": username, "tokens": count})
        return count


def user_for_token(token: str) -> UserInfo | None:
    """The token's user, or None for an unknown or expired token."""
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
        if api_token.expires_at is not None and api_token.expires_at <= now:
            return None
        # Record use at most once a minute: a busy client should not write on every call.
        if api_token.last_used_at is None or now - api_token.last_used_at > TOKEN_TOUCH_EVERY:
            api_token.last_used_at = now
        return UserInfo.of(user)
