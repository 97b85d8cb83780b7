"""``flowsched db upgrade`` and ``db check``: schema migrations with Alembic.

Upgrade is idempotent: run it on every deploy. On MySQL the server must use
``explicit_defaults_for_timestamp`` semantics and utf8mb4; flowsched's schema
declares every default itself, so it does not depend on the server's setting.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from alembic import command
from alembic.config import Config as AlembicConfig
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import select
from sqlalchemy.exc import OperationalError

from flowsched.config import get_config
from flowsched.db.engine import get_engine, safe_url, session_scope
from flowsched.db.models import Pool
from flowsched.exceptions import DatabaseUnavailable

MIGRATIONS = Path(__file__).parent / "migrations"
DEFAULT_POOL = "default_pool"
DEFAULT_POOL_SLOTS = 128


def _alembic_config() -> AlembicConfig:
    config = AlembicConfig()
    config.set_main_option("script_location", str(MIGRATIONS))
    return config


def _connect_error(exc: OperationalError) -> DatabaseUnavailable:
    return DatabaseUnavailable(
        f"cannot reach the metadata database "
        f"{safe_url(get_config().database.sql_alchemy_conn)}: {exc.orig or exc}"
    )


def upgrade() -> list[str]:
    """Migrate to the newest schema; returns the revisions applied (empty if none)."""
    before = current_revision()
    config = _alembic_config()
    try:
        with get_engine().begin() as connection:
            config.attributes["connection"] = connection
            command.upgrade(config, "head")
    except OperationalError as exc:
        raise _connect_error(exc) from exc
    with session_scope() as session:
        if session.scalar(select(Pool).where(Pool.name == DEFAULT_POOL)) is None:
            session.add(
                Pool(name=DEFAULT_POOL, slots=DEFAULT_POOL_SLOTS, description="Default pool")
            )
    script = ScriptDirectory.from_config(config)
    applied = []
    for revision in script.walk_revisions(base="base", head="heads"):
        if revision.revision == before:
            break
        applied.append(revision.revision)
    return list(reversed(applied))


def current_revision() -> str | None:
    try:
        with get_engine().connect() as connection:
            return MigrationContext.configure(connection).get_current_revision()
    except OperationalError as exc:
        raise _connect_error(exc) from exc


def head_revision() -> str:
    head = ScriptDirectory.from_config(_alembic_config()).get_current_head()
    assert head is not None
    return head


@dataclass
class DbStatus:
    url: str
    dialect: str
    server_version: str
    current: str | None
    head: str

    @property
    def pending(self) -> bool:
        return self.current != self.head


def check() -> DbStatus:
    """Connectivity and pending migrations, for ``flowsched db check``."""
    engine = get_engine()
    current = current_revision()
    with engine.connect() as connection:
        info = connection.dialect.server_version_info or ()
    return DbStatus(
        url=safe_url(get_config().database.sql_alchemy_conn),
        dialect=engine.dialect.name,
        server_version=".".join(str(part) for part in info),
        current=current,
        head=head_revision(),
    )
