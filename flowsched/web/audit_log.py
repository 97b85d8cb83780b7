"""Reading the audit log: every action and login, filtered by user, DAG and event.

The rows are written where the actions happen (:func:`flowsched.operations.audit`,
:mod:`flowsched.web.throttle`); the admin page and ``GET /api/v1/eventLogs``
(Airflow's name) both read them through :func:`audit_page`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session

from flowsched.db.models import AuditLog
from flowsched.web.queries import Page

ACTOR_SOURCES = ("web", "api", "cli")


@dataclass(frozen=True)
class AuditFilter:
    user: str | None = None
    dag_id: str | None = None
    event: str | None = None


def user_of(actor: str | None) -> str | None:
    """``web:alice`` -> ``alice``; a bare source such as ``cli`` names no user."""
    if not actor or ":" not in actor:
        return None
    return actor.split(":", 1)[1]


def audit_page(
    session: Session, wanted: AuditFilter, number: int, size: int
) -> tuple[list[AuditLog], Page]:
    """Newest first, one page of the rows that match every given filter."""
    query = select(AuditLog)
    if wanted.user:
        actors = [f"{source}:{wanted.user}" for source in ACTOR_SOURCES]
        query = query.where(or_(AuditLog.actor.in_(actors), AuditLog.actor == wanted.user))
    if wanted.dag_id:
        query = query.where(AuditLog.dag_id == wanted.dag_id)
    if wanted.event:
        query = query.where(AuditLog.event == wanted.event)
    total = session.scalar(select(func.count()).select_from(query.subquery())) or 0
    page = Page(number, size, total)
    rows = session.scalars(query.order_by(AuditLog.id.desc()).offset(page.offset).limit(size)).all()
    for row in rows:
        session.expunge(row)
    return list(rows), page


def known_events(session: Session) -> list[str]:
    """The events present, for the page's filter list."""
    return list(session.scalars(select(AuditLog.event).distinct().order_by(AuditLog.event)))


def audit_json(row: AuditLog, iso: Any) -> dict[str, Any]:
    return {
        "id": row.id,
        "created_at": iso(row.created_at),
        "event": row.event,
        "actor": row.actor,
        "user": user_of(row.actor),
        "dag_id": row.dag_id,
        "run_id": row.run_id,
        "task_id": row.task_id,
        "extra": row.extra,
    }
