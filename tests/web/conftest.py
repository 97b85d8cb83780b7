"""Fixtures for the webserver tests: an app on a real home, users of each role, seeded data."""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from openapi_core.templating.paths.exceptions import OperationNotFound, PathNotFound
from sqlalchemy import update

from flowsched.dag_processor import process_folder
from flowsched.db.engine import session_scope
from flowsched.db.models import DagRun, TaskInstance
from flowsched.operations import trigger_dag
from flowsched.timezone import utcnow
from flowsched.web.app import create_app
from flowsched.web.users import create_token, create_user
from tests.web.openapi_check import check

PASSWORD = "correct-horse-battery"
ROLES = ("admin", "op", "viewer")

PIPELINE = """
from datetime import datetime
from flowsched import DAG, BashOperator

with DAG("pipeline", schedule="@daily", start_date=datetime(2026, 1, 1), catchup=False,
         tags=["etl", "team-a"], description="Extract, load, <b>report</b>") as dag:
    extract = BashOperator(task_id="extract", bash_command="echo extract")
    load = BashOperator(task_id="load", bash_command="echo load")
    report = BashOperator(task_id="report", bash_command="echo report")
    extract >> load >> report
"""

OTHER = """
from datetime import datetime
from flowsched import DAG, BashOperator

with DAG("other_dag", schedule=None, start_date=datetime(2026, 1, 1), tags=["team-b"]) as dag:
    BashOperator(task_id="only", bash_command="echo only")
"""


def login(client: FlaskClient, username: str, password: str = PASSWORD) -> Any:
    page = client.get("/login")
    token = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
    assert token, "the login form carries a CSRF token"
    return client.post(
        "/login",
        data={"username": username, "password": password, "csrf_token": token.group(1)},
    )


def csrf_of(client: FlaskClient) -> str:
    """The CSRF token of the client's session (as every form on its pages carries it)."""
    client.get("/dags")
    with client.session_transaction() as session:
        return str(session["_csrf"])


def post(client: FlaskClient, url: str, data: dict[str, str] | None = None) -> Any:
    return client.post(url, data={**(data or {}), "csrf_token": csrf_of(client)})


class CheckedClient(FlaskClient):
    """A test client that validates every API response against the OpenAPI document.

    The document is the one contract for API shapes: a response it does not
    describe (a status, a field, a content type) fails the test that got it.
    """

    def open(self, *args: Any, **kwargs: Any) -> Any:
        response = super().open(*args, **kwargs)
        path = response.request.path
        if path.startswith("/api/v1/") and path != "/api/v1/openapi.json":
            # A route or method the API does not have: nothing to hold it to.
            with contextlib.suppress(PathNotFound, OperationNotFound):
                check(response)
        return response


@dataclass
class Web:
    app: Flask
    tokens: dict[str, str]

    def client(self, role: str | None = None) -> FlaskClient:
        self.app.test_client_class = CheckedClient
        client = self.app.test_client()
        if role is not None:
            response = login(client, role)
            assert response.status_code == 302, response.text
        return client

    def api(self, role: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[role]}"}


def make_web(home: Any) -> Web:
    for role in ROLES:
        create_user(role, PASSWORD, role)
    tokens = {role: create_token(role, "tests") for role in ROLES}
    return Web(create_app(secret_key="test-secret"), tokens)


@pytest.fixture
def web(home: Any) -> Web:
    """The app on SQLite and on MariaDB, with a user and an API token per role."""
    return make_web(home)


@pytest.fixture
def sqlite_web(sqlite_home: Any) -> Web:
    return make_web(sqlite_home)


def seed(home: Any) -> dict[str, str]:
    """Two DAGs; three runs of ``pipeline``: success, failed (report upstream_failed), running.

    Runs are created by the real trigger path; states are then set as the
    scheduler would leave them, so pages can be checked without waiting on tasks.
    """
    home.write_dag("pipeline.py", PIPELINE)
    home.write_dag("other.py", OTHER)
    report = process_folder()
    assert not report.errors, report.errors
    now = utcnow()
    states = {
        "ok": ("success", {"extract": "success", "load": "success", "report": "success"}),
        "bad": ("failed", {"extract": "success", "load": "failed", "report": "upstream_failed"}),
        "live": ("running", {"extract": "running"}),
    }
    run_ids = {}
    for offset, (name, (run_state, ti_states)) in enumerate(states.items()):
        run = trigger_dag(
            "pipeline",
            run_id=f"manual__{name}",
            logical_date=now - timedelta(hours=3 - offset),
            conf={"name": name, "html": "<script>alert(1)</script>"},
        )
        run_ids[name] = run.run_id
        with session_scope() as session:
            session.execute(
                update(DagRun)
                .where(DagRun.id == run.id)
                .values(state=run_state, start_date=now - timedelta(hours=3 - offset))
            )
            for task_id, state in ti_states.items():
                session.execute(
                    update(TaskInstance)
                    .where(TaskInstance.dag_run_id == run.id, TaskInstance.task_id == task_id)
                    .values(state=state, try_number=1)
                )
    return run_ids


@pytest.fixture
def seeded(home: Any, web: Web) -> Iterator[tuple[Web, dict[str, str]]]:
    yield web, seed(home)


@pytest.fixture
def sqlite_seeded(sqlite_home: Any, sqlite_web: Web) -> Iterator[tuple[Web, dict[str, str]]]:
    yield sqlite_web, seed(sqlite_home)


@pytest.fixture
def live(home: Any) -> Iterator[Any]:
    """A real gunicorn server on SQLite and on MariaDB, a user and token per role
    (tests/web/live.py)."""
    from tests.web.live import start_live

    yield from start_live(home)
