"""Login, sessions, CSRF and roles: nothing happens without the right user and form token."""

from __future__ import annotations

import pytest
from click.testing import CliRunner
from sqlalchemy import select

from flowsched.cli.main import cli
from flowsched.db.engine import session_scope
from flowsched.db.models import ApiToken, Dag, DagRun, User
from flowsched.operations import get_dag
from flowsched.web.users import (
    UserError,
    authenticate,
    create_token,
    create_user,
    delete_user,
    reset_password,
    user_for_token,
)
from tests.web.conftest import PASSWORD, csrf_of, login, post


def _paused(dag_id: str) -> bool:
    with session_scope() as session:
        return get_dag(session, dag_id).is_paused


def _run_count() -> int:
    with session_scope() as session:
        return len(session.scalars(select(DagRun.id)).all())


PAGES = [
    "/dags",
    "/dags/pipeline",
    "/dags/pipeline/graph",
    "/dags/pipeline/code",
    "/dags/pipeline/runs",
    "/dags/pipeline/runs/manual__ok",
    "/dags/pipeline/runs/manual__ok/tasks/extract",
    "/dags/pipeline/trigger",
    "/dags/pipeline/delete",
    "/workers",
    "/api-docs",
]


def test_every_page_and_action_needs_login(sqlite_seeded):
    web, _ = sqlite_seeded
    client = web.client()
    for url in PAGES:
        response = client.get(url)
        assert response.status_code == 302, url
        assert response.location.startswith("/login?next="), url
    # actions without a session: redirected to login, and nothing changes
    for url, data in [
        ("/dags/pipeline/pause", {"paused": "true"}),
        ("/dags/pipeline/trigger", {"conf": ""}),
        ("/dags/pipeline/clear", {"run_id": "manual__bad", "only_failed": "on"}),
        ("/dags/pipeline/mark", {"run_id": "manual__ok", "task_id": "load", "state": "failed"}),
        ("/dags/pipeline/delete", {"confirm": "pipeline"}),
    ]:
        response = client.post(url, data=data)
        assert response.status_code == 302 and "/login" in response.location, url
    assert not _paused("pipeline")
    assert _run_count() == 3
    with session_scope() as session:
        assert session.get(Dag, "pipeline") is not None


def test_login_sets_a_hardened_cookie_and_honours_next(sqlite_web):
    client = sqlite_web.client()
    response = login(client, "viewer")
    assert response.status_code == 302 and response.location == "/dags"
    cookie = response.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie
    assert "Secure" not in cookie  # plain HTTP with cookie_secure = auto
    assert client.get("/dags").status_code == 200

    https = sqlite_web.app.test_client()
    https.get("/login", base_url="https://localhost")
    with https.session_transaction() as session:
        token = session["_csrf"]
    response = https.post(
        "/login",
        base_url="https://localhost",
        data={"username": "viewer", "password": PASSWORD, "csrf_token": token},
    )
    assert "Secure" in response.headers["Set-Cookie"]

    # only same-site paths are followed after login
    for target, expected in [("/workers", "/workers"), ("//evil.example/x", "/dags")]:
        fresh = sqlite_web.app.test_client()
        fresh.get("/login")
        with fresh.session_transaction() as session:
            token = session["_csrf"]
        response = fresh.post(
            "/login",
            data={"username": "op", "password": PASSWORD, "csrf_token": token, "next": target},
        )
        assert response.location == expected


def test_cookie_secure_true_marks_http_cookies_secure(sqlite_home, sqlite_web):
    from flowsched.web.app import create_app

    app = create_app(secret_key="s", cookie_secure="true")
    response = app.test_client().get("/login")
    assert "Secure" in response.headers["Set-Cookie"]


def test_wrong_password_is_refused_without_saying_which_part(sqlite_web):
    client = sqlite_web.client()
    wrong_password = login(client, "admin", "not-the-password")
    unknown_user = login(client, "nobody", PASSWORD)
    for response in (wrong_password, unknown_user):
        assert response.status_code == 401
        assert "Wrong username or password" in response.text
    assert client.get("/dags").status_code == 302


def test_csrf_token_is_required_and_bound_to_the_session(sqlite_seeded):
    web, _ = sqlite_seeded
    client = web.client("admin")
    no_token = client.post("/dags/pipeline/pause", data={"paused": "true"})
    assert no_token.status_code == 400 and "CSRF" in no_token.text
    other = web.client("admin")
    foreign = client.post(
        "/dags/pipeline/pause", data={"paused": "true", "csrf_token": csrf_of(other)}
    )
    assert foreign.status_code == 400
    assert not _paused("pipeline")
    ok = client.post("/dags/pipeline/pause", data={"paused": "true", "csrf_token": csrf_of(client)})
    assert ok.status_code == 302
    assert _paused("pipeline")
    # the login form is protected too
    fresh = web.app.test_client()
    assert fresh.post("/login", data={"username": "admin", "password": PASSWORD}).status_code == 400


def test_logout_password_reset_and_deletion_end_sessions(sqlite_web):
    client = sqlite_web.client("viewer")
    post(client, "/logout")
    assert client.get("/dags").status_code == 302

    client = sqlite_web.client("op")
    reset_password("op", "a-new-password-1")
    assert client.get("/dags").status_code == 302  # old session no longer valid
    assert login(sqlite_web.app.test_client(), "op", "a-new-password-1").status_code == 302

    client = sqlite_web.client("viewer")
    delete_user("viewer")
    assert client.get("/dags").status_code == 302


ACTIONS = {
    # name: (url, form, least role)
    "pause": ("/dags/pipeline/pause", {"paused": "true"}, "op"),
    "trigger": ("/dags/pipeline/trigger", {"conf": '{"by": "test"}'}, "op"),
    "clear": (
        "/dags/pipeline/clear",
        {"run_id": "manual__bad", "only_failed": "on", "downstream": "on"},
        "op",
    ),
    "mark": (
        "/dags/pipeline/mark",
        {"run_id": "manual__ok", "task_id": "load", "state": "failed"},
        "admin",
    ),
    "delete": ("/dags/pipeline/delete", {"confirm": "pipeline", "force": "on"}, "admin"),
}
RANK = {"viewer": 0, "op": 1, "admin": 2}


@pytest.mark.parametrize("role", ["viewer", "op"])
def test_roles_below_an_action_get_403_and_change_nothing(sqlite_seeded, role):
    web, _ = sqlite_seeded
    client = web.client(role)
    for name, (url, form, needed) in ACTIONS.items():
        if RANK[role] >= RANK[needed]:
            continue
        response = post(client, url, form)
        assert response.status_code == 403, (role, name)
        assert "needs the" in response.text
    if role == "viewer":
        assert client.get("/dags/pipeline/trigger").status_code == 403
        assert not _paused("pipeline") and _run_count() == 3
    assert client.get("/dags/pipeline/delete").status_code == 403
    with session_scope() as session:
        assert session.get(Dag, "pipeline") is not None


def test_each_role_may_do_what_it_should(sqlite_seeded):
    web, _ = sqlite_seeded
    op = web.client("op")
    for name in ("pause", "trigger", "clear"):
        url, form, _ = ACTIONS[name]
        assert post(op, url, form).status_code == 302, name
    assert _paused("pipeline") and _run_count() == 4
    admin = web.client("admin")
    for name in ("mark", "delete"):
        url, form, _ = ACTIONS[name]
        assert post(admin, url, form).status_code == 302, name
    with session_scope() as session:
        assert session.get(Dag, "pipeline") is None


def test_user_rules_and_token_storage(sqlite_home):
    with pytest.raises(UserError, match="too short"):
        create_user("shorty", "short", "viewer")
    with pytest.raises(UserError, match="unknown role"):
        create_user("roleless", PASSWORD, "superuser")
    create_user("carol", PASSWORD, "op")
    with pytest.raises(UserError, match="already exists"):
        create_user("carol", PASSWORD, "viewer")
    assert authenticate("carol", PASSWORD).role.value == "op"
    assert authenticate("carol", "wrong-password") is None
    token = create_token("carol")
    with session_scope() as session:
        stored = session.scalars(select(ApiToken.token_hash)).all()
        hashes = session.scalars(select(User.password_hash)).all()
    assert token not in stored and len(stored[0]) == 64  # only the SHA-256 is kept
    assert all(PASSWORD not in h for h in hashes)
    assert user_for_token(token).username == "carol"
    assert user_for_token(token + "x") is None


def test_users_cli(home):
    runner = CliRunner()
    created = runner.invoke(
        cli, ["users", "create", "dave", "--role", "admin", "--password-stdin"], input=PASSWORD
    )
    assert created.exit_code == 0, created.output
    assert "created user dave (admin)" in created.output
    again = runner.invoke(
        cli, ["users", "create", "dave", "--role", "viewer", "--password", PASSWORD]
    )
    assert again.exit_code == 1 and "already exists" in again.output
    token = runner.invoke(cli, ["users", "token", "dave", "--description", "ci"])
    assert token.exit_code == 0 and token.output.startswith("fst_")
    assert user_for_token(token.output.strip()).username == "dave"
    listing = runner.invoke(cli, ["users", "list"])
    assert "dave" in listing.output and "admin" in listing.output
    assert "+08:00" in listing.output  # times in the cluster zone
    reset = runner.invoke(
        cli, ["users", "reset-password", "dave", "--password-stdin"], input="another-password\n"
    )
    assert reset.exit_code == 0
    assert authenticate("dave", "another-password") is not None
    revoked = runner.invoke(cli, ["users", "token", "dave", "--revoke-all"])
    assert "revoked 1 token" in revoked.output
    assert user_for_token(token.output.strip()) is None
    deleted = runner.invoke(cli, ["users", "delete", "dave", "--yes"])
    assert deleted.exit_code == 0
    assert authenticate("dave", "another-password") is None
    missing = runner.invoke(cli, ["users", "delete", "dave", "--yes"])
    assert missing.exit_code == 1 and "no user 'dave'" in missing.output
