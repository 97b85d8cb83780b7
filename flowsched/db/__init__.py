"""The metadata database: models, engine/session handling and migrations."""

from flowsched.db.engine import get_engine, reset_engine, session_scope

__all__ = ["get_engine", "reset_engine", "session_scope"]
