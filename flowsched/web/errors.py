"""Errors as pages for people and JSON for the API; never a traceback.

Unknown ids are 404s, an unreachable metadata database is a 503 page that
retries by itself (the engine reconnects on the next request once the
database is back), anything unexpected is logged and shown as a short 500.
"""

from __future__ import annotations

import logging
from typing import Any

from flask import Flask, jsonify, render_template, request
from sqlalchemy.exc import OperationalError
from werkzeug.exceptions import HTTPException, InternalServerError

from flowsched.config import get_config
from flowsched.db.engine import safe_url
from flowsched.exceptions import (
    DagNotFound,
    DagRunNotFound,
    DatabaseUnavailable,
    FlowschedError,
    TaskNotFound,
)

log = logging.getLogger(__name__)

RETRY_AFTER = 10


def wants_json() -> bool:
    return request.path.startswith("/api/")


def error_response(status: int, title: str, detail: str) -> Any:
    """One shape for every error: ``{"status", "title", "detail"}`` or the error page."""
    headers = {"Retry-After": str(RETRY_AFTER)} if status == 503 else {}
    if wants_json():
        response = jsonify(status=status, title=title, detail=detail)
        return response, status, headers
    page = render_template(
        "error.html", status=status, title=title, detail=detail, retry_after=RETRY_AFTER
    )
    return page, status, headers


def _http(exc: HTTPException) -> Any:
    status = exc.code or 500
    response = error_response(status, exc.name, exc.description or exc.name)
    if status == 401 and wants_json():
        response[2]["WWW-Authenticate"] = 'Bearer realm="flowsched"'
    return response


def _not_found(exc: FlowschedError) -> Any:
    return error_response(404, "Not Found", str(exc))


def _database_down(exc: Exception) -> Any:
    if isinstance(exc, DatabaseUnavailable):
        detail = str(exc)
    else:
        url = safe_url(get_config().database.sql_alchemy_conn)
        detail = f"the metadata database {url} failed: {getattr(exc, 'orig', None) or exc}"
    log.warning("metadata database unavailable: %s", detail)
    return error_response(503, "Metadata database unavailable", detail)


def _refused(exc: FlowschedError) -> Any:
    return error_response(400, "Bad Request", str(exc))


def _unexpected(exc: Exception) -> Any:
    log.exception("unhandled error on %s %s", request.method, request.path)
    return error_response(
        500, "Internal Server Error", "Something went wrong; the webserver log has the details."
    )


def register(app: Flask) -> None:
    app.register_error_handler(HTTPException, _http)
    for kind in (DagNotFound, DagRunNotFound, TaskNotFound):
        app.register_error_handler(kind, _not_found)
    app.register_error_handler(DatabaseUnavailable, _database_down)
    app.register_error_handler(OperationalError, _database_down)
    app.register_error_handler(FlowschedError, _refused)
    app.register_error_handler(InternalServerError, _unexpected)
    app.register_error_handler(Exception, _unexpected)
