"""Connections and variables in the metadata database: the one writer of those tables.

The CLI, the web pages and the REST API all go through these functions, so
each change is validated, encrypted and audited the same way (the audit row
names the id and the actor, never a value). Secret columns (``password``,
``extra``, ``val``) hold Fernet tokens of ``core.fernet_key``; without a key
nothing secret is written (:class:`flowsched.crypto.FernetKeyMissing`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError

from flowsched.connection import Connection, ConnectionNotFound, InvalidConnection
from flowsched.crypto import decrypt, encrypt, rotate
from flowsched.db.engine import session_scope
from flowsched.db.models import ID_LENGTH, ConnectionRecord, VariableRecord
from flowsched.exceptions import FlowschedError
from flowsched.secrets.base import SecretsBackend
from flowsched.timezone import utcnow
from flowsched.variable import InvalidVariable

CONN_ID_PATTERN = re.compile(r"^[A-Za-z0-9_.\-]+$")


class AlreadyExists(FlowschedError):
    """A connection or variable with that id is already stored."""


class VariableNotFound(FlowschedError):
    """No variable with that key is stored in the database."""


def check_conn_id(conn_id: str) -> None:
    if not conn_id or len(conn_id) > ID_LENGTH or not CONN_ID_PATTERN.match(conn_id):
        raise InvalidConnection(
            f"conn_id {conn_id!r}: use 1-{ID_LENGTH} letters, digits, '_', '.' or '-'"
        )


def check_key(key: str) -> None:
    if not key or len(key) > ID_LENGTH or key != key.strip() or any(c < " " for c in key):
        raise InvalidVariable(
            f"variable key {key!r}: use 1-{ID_LENGTH} characters, no surrounding spaces "
            "or control characters"
        )


def _audit(session: object, event: str, actor: str | None, **extra: str) -> None:
    from flowsched.operations import audit

    audit(session, event, actor=actor, extra=extra)  # type: ignore[arg-type]


# -- connections -----------------------------------------------------------------
def _to_connection(record: ConnectionRecord, *, secrets: bool = True) -> Connection:
    what = f"connection '{record.conn_id}'"
    conn = Connection(
        conn_id=record.conn_id,
        conn_type=record.conn_type,
        description=record.description,
        host=record.host,
        login=record.login,
        schema=record.schema,
        port=record.port,
        password=decrypt(record.password, f"the password of {what}") if secrets else None,
        extra=decrypt(record.extra, f"the extra of {what}") if secrets else None,
    )
    return conn


def _fill(record: ConnectionRecord, conn: Connection) -> None:
    if not conn.conn_type:
        raise InvalidConnection(f"connection '{conn.conn_id}': conn_type is required")
    conn.extra_dejson  # noqa: B018 (refuse a malformed extra before storing it)
    what = f"connection '{conn.conn_id}'"
    record.conn_type = conn.conn_type
    record.description = conn.description
    record.host = conn.host
    record.schema = conn.schema
    record.login = conn.login
    record.port = conn.port
    record.password = encrypt(conn.password or None, f"the password of {what}")
    record.extra = encrypt(conn.extra or None, f"the extra of {what}")
    record.updated_at = utcnow()


def get_connection_record(conn_id: str) -> Connection | None:
    with session_scope(read_only=True) as session:
        record = session.scalar(select(ConnectionRecord).where(ConnectionRecord.conn_id == conn_id))
        return None if record is None else _to_connection(record)


def list_connections(*, secrets: bool = False) -> list[Connection]:
    """Stored connections by conn_id; password and extra only with ``secrets``."""
    with session_scope(read_only=True) as session:
        records = session.scalars(select(ConnectionRecord).order_by(ConnectionRecord.conn_id))
        return [_to_connection(record, secrets=secrets) for record in records]


def add_connection(conn: Connection, *, actor: str | None = None, overwrite: bool = False) -> bool:
    """Store a new connection (or replace one with ``overwrite``); True if it replaced one."""
    assert conn.conn_id is not None
    check_conn_id(conn.conn_id)
    try:
        with session_scope() as session:
            record = session.scalar(
                select(ConnectionRecord).where(ConnectionRecord.conn_id == conn.conn_id)
            )
            replaced = record is not None
            if record is not None and not overwrite:
                raise AlreadyExists(f"a connection '{conn.conn_id}' already exists")
            if record is None:
                record = ConnectionRecord(conn_id=conn.conn_id)
                session.add(record)
            _fill(record, conn)
            _audit(
                session,
                "connection_set" if replaced else "connection_add",
                actor,
                conn_id=conn.conn_id,
            )
    except IntegrityError:
        raise AlreadyExists(f"a connection '{conn.conn_id}' already exists") from None
    return replaced


def update_connection(
    conn_id: str, changes: dict[str, object], *, actor: str | None = None
) -> Connection:
    """Change some fields of a stored connection; a field left out keeps its value."""
    with session_scope() as session:
        record = session.scalar(select(ConnectionRecord).where(ConnectionRecord.conn_id == conn_id))
        if record is None:
            raise ConnectionNotFound(f"no connection '{conn_id}' in the database")
        fields = _to_connection(record).to_dict()
        fields.update(changes)
        conn = Connection.from_dict(conn_id, fields)
        _fill(record, conn)
        _audit(session, "connection_update", actor, conn_id=conn_id)
    return conn


def delete_connection(conn_id: str, *, actor: str | None = None) -> None:
    with session_scope() as session:
        gone = session.execute(
            delete(ConnectionRecord).where(ConnectionRecord.conn_id == conn_id)
        ).rowcount
        if not gone:
            raise ConnectionNotFound(f"no connection '{conn_id}' in the database")
        _audit(session, "connection_delete", actor, conn_id=conn_id)


# -- variables ---------------------------------------------------------------------
@dataclass(frozen=True)
class StoredVariable:
    key: str
    val: str | None
    description: str | None


def get_variable_record(key: str) -> StoredVariable | None:
    with session_scope(read_only=True) as session:
        record = session.scalar(select(VariableRecord).where(VariableRecord.key == key))
        if record is None:
            return None
        value = decrypt(record.val, f"variable '{key}'")
        return StoredVariable(record.key, value, record.description)


def list_variables(*, values: bool = False) -> list[StoredVariable]:
    """Stored variables by key; decrypted values only with ``values``."""
    with session_scope(read_only=True) as session:
        records = session.scalars(select(VariableRecord).order_by(VariableRecord.key))
        return [
            StoredVariable(
                r.key, decrypt(r.val, f"variable '{r.key}'") if values else None, r.description
            )
            for r in records
        ]


def set_variable(
    key: str, value: str, description: str | None = None, *, actor: str | None = None
) -> None:
    """Create or replace a variable (Airflow's ``Variable.set``)."""
    check_key(key)
    if not isinstance(value, str):
        raise InvalidVariable(f"variable '{key}': the value must be text")
    token = encrypt(value, f"variable '{key}'")
    for attempt in range(2):  # a concurrent insert of the same key: update it instead
        try:
            with session_scope() as session:
                record = session.scalar(select(VariableRecord).where(VariableRecord.key == key))
                if record is None:
                    record = VariableRecord(key=key)
                    session.add(record)
                record.val = token  # type: ignore[assignment]
                record.description = description
                record.updated_at = utcnow()
                _audit(session, "variable_set", actor, key=key)
            return
        except IntegrityError:
            if attempt:
                raise


def delete_variable(key: str, *, actor: str | None = None) -> int:
    with session_scope() as session:
        gone = session.execute(delete(VariableRecord).where(VariableRecord.key == key)).rowcount
        if gone:
            _audit(session, "variable_delete", actor, key=key)
        return int(gone)


# -- the backend and key rotation ------------------------------------------------------
class MetastoreBackend(SecretsBackend):
    name = "database"

    def get_connection(self, conn_id: str) -> Connection | None:
        return get_connection_record(conn_id)

    def get_variable(self, key: str) -> str | None:
        record = get_variable_record(key)
        return None if record is None else record.val


def rotate_fernet_key(*, actor: str | None = None) -> tuple[int, int]:
    """Re-encrypt every stored secret with the first key of ``core.fernet_key``, in one
    transaction (all rows or none); (connections, variables) rewritten."""
    with session_scope() as session:
        connections = session.scalars(select(ConnectionRecord)).all()
        for record in connections:
            what = f"connection '{record.conn_id}'"
            record.password = rotate(record.password, f"the password of {what}")
            record.extra = rotate(record.extra, f"the extra of {what}")
        variables = session.scalars(select(VariableRecord)).all()
        for variable in variables:
            variable.val = rotate(variable.val, f"variable '{variable.key}'")  # type: ignore[assignment]
        _audit(
            session,
            "rotate_fernet_key",
            actor,
            connections=str(len(connections)),
            variables=str(len(variables)),
        )
    return len(connections), len(variables)
