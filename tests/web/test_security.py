"""Issue 11, web and API: each weakness attacked over HTTP against a real gunicorn server."""

from __future__ import annotations

import os
import re
import stat
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path
from urllib.parse import quote, unquote

import pytest
from click.testing import CliRunner
from sqlalchemy import select
from werkzeug.test import EnvironBuilder
from werkzeug.wrappers import Request, Response

from flowsched.cli.main import cli
from flowsched.config import load_config
from flowsched.dag_processor import process_folder
from flowsched.db.engine import session_scope
from flowsched.db.models import DagRun
from flowsched.exceptions import ConfigError
from flowsched.web.users import (
    UserError,
    create_token,
    create_user,
    list_tokens,
    reset_password,
)
from tests.conftest import wait_until
from tests.servers import free_port, wait_for_port
from tests.web.conftest import OTHER, PASSWORD
from tests.web.live import CONF_LIMIT, STRONG_SECRET, Client, Live
from tests.web.openapi_check import _openapi


def check_live(method: str, path: str, reply) -> dict:
    """Validate a real server's JSON reply against the served OpenAPI document."""
    environ = EnvironBuilder(path="/api/v1" + path, method=method).get_environ()
    response = Response(reply.body, status=reply.status, headers=list(reply.headers.items()))
    from openapi_core.contrib.werkzeug import WerkzeugOpenAPIRequest, WerkzeugOpenAPIResponse

    _openapi().validate_response(
        WerkzeugOpenAPIRequest(Request(environ)), WerkzeugOpenAPIResponse(response)
    )
    return reply.json()


# -- open redirect ---------------------------------------------------------
ATTACKS = [
    "/%09/evil.com",
    "/\t/evil.com",
    "/%0d%0a/evil.com",
    "//evil.com",
    "/\\evil.com",
    "/%5Cevil.com",
    "https://evil.com/",
    "%09//evil.com",
    " //evil.com",
    "/\x00/evil.com",
]


def _query(raw: str) -> str:
    """``raw`` as the query value: already-encoded attacks kept, others percent-encoded."""
    return raw if "%" in raw else quote(raw, safe="")


def test_login_redirects_only_to_same_origin_paths(live: Live) -> None:
    client = live.client("viewer")
    for attack in ATTACKS:
        reply = client.get("/login?next=" + _query(attack))
        assert reply.status == 302, attack
        assert reply.location == "/dags", (attack, reply.location)
    # a page of this site is still honoured, query string and all
    reply = client.get("/login?next=" + _query("/dags/other_dag/runs?state=failed"))
    assert reply.location == "/dags/other_dag/runs?state=failed"

    for attack in ATTACKS:
        fresh = Client(live.port)
        reply = fresh.login("viewer", next_=unquote(attack))  # the form sends it decoded
        assert reply.status == 302, (attack, reply.text[:300])
        assert reply.location == "/dags", (attack, reply.location)


# -- sessions --------------------------------------------------------------
def test_logout_ends_every_session_of_the_user_including_replayed_cookies(live: Live) -> None:
    first = live.client("op")
    other_browser = live.client("op")
    replay = Client(live.port, cookies=dict(first.cookies))
    assert replay.get("/dags").status == 200  # a copied cookie works while logged in

    reply = first.logout()
    assert reply.status == 302 and reply.location == "/login"
    for client in (replay, other_browser, first):
        reply = client.get("/dags")
        assert reply.status == 302 and reply.location.startswith("/login"), reply.status
    # a fresh login works again, and another user's session was never touched
    assert live.client("op").get("/dags").status == 200


def test_a_password_change_ends_the_users_sessions(live: Live) -> None:
    client = live.client("viewer")
    bystander = live.client("admin")
    reset_password("viewer", "another-long-password")
    assert client.get("/dags").status == 302
    assert bystander.get("/dags").status == 200
    assert live.client().login("viewer", "another-long-password").status == 302


# -- throttling and the audit log ------------------------------------------
def _wait_text(reply) -> int:
    found = re.search(r"try again in (\d+) s", reply.text)
    assert found, reply.text[:500]
    return int(found.group(1))


def test_failed_logins_lock_the_user_with_growing_delays(live: Live) -> None:
    attacker = Client(live.port, source="127.0.0.2")
    for _ in range(3):
        assert attacker.login("op", "wrong-password").status == 401
    # the right password from another address is refused too: the user is locked
    owner = Client(live.port, source="127.0.0.3")
    locked = owner.login("op")
    assert locked.status == 429 and locked.headers["Retry-After"] == "2"
    assert _wait_text(locked) == 2
    # ... but that address may log in other users
    assert Client(live.port, source="127.0.0.3").login("viewer").status == 302

    time.sleep(2.1)
    assert attacker.login("op", "wrong-again").status == 401  # 4th failure: 4 s this time
    assert _wait_text(owner.login("op")) == 4
    time.sleep(4.1)
    assert owner.login("op").status == 302  # the lock ends and the right password works
    # success forgot op's failures: one more mistake is not a lock
    assert Client(live.port, source="127.0.0.4").login("op", "typo").status == 401
    assert Client(live.port, source="127.0.0.5").login("op").status == 302


def test_failed_logins_lock_the_client_address_whatever_the_usernames(live: Live) -> None:
    sprayer = Client(live.port, source="127.0.0.6")
    for name in ("alice", "bob", "carol"):
        assert sprayer.login(name, "guess-1234").status == 401
    assert sprayer.login("viewer").status == 429  # right password, locked address
    assert Client(live.port, source="127.0.0.7").login("viewer").status == 302


def test_audit_log_api_and_page_show_actions_and_failed_logins(live: Live, home) -> None:
    home.write_dag("other.py", OTHER)
    assert not process_folder().errors
    Client(live.port, source="127.0.0.8").login("viewer", "not-my-password")
    for conf in ({"n": 1}, {"n": 2}):
        reply = live.api("POST", "/dags/other_dag/runs", live.tokens["op"], {"conf": conf})
        assert reply.status == 201, reply.text
    live.api("PATCH", "/dags/other_dag", live.tokens["admin"], {"is_paused": True})

    admin = live.tokens["admin"]
    reply = live.api("GET", "/eventLogs?event=login_failed", admin)
    body = check_live("GET", "/eventLogs", reply)
    assert [(e["user"], e["extra"]["address"]) for e in body["event_logs"]] == [
        ("viewer", "127.0.0.8")
    ]
    body = check_live("GET", "/eventLogs", live.api("GET", "/eventLogs?user=op", admin))
    assert [e["event"] for e in body["event_logs"]] == ["trigger", "trigger"]
    assert body["event_logs"][0]["extra"] == {"n": 2}  # newest first
    reply = live.api("GET", "/eventLogs?dag_id=other_dag&size=1&page=2", admin)
    body = check_live("GET", "/eventLogs", reply)
    assert body["paging"] == {"page": 2, "size": 1, "total": 3}
    assert body["event_logs"][0]["event"] == "trigger"
    assert body["event_logs"][0]["actor"] == "api:op"
    # only admins read it
    assert live.api("GET", "/eventLogs", live.tokens["op"]).status == 403
    assert live.api("GET", "/eventLogs", "fst_not-a-token").status == 401

    page = live.client("admin").get("/audit?event=login_failed")
    assert page.status == 200 and "127.0.0.8" in page.text and "login_failed" in page.text
    assert "api:op" not in page.text  # filtered out
    assert live.client("op").get("/audit").status == 403


# -- API tokens ------------------------------------------------------------
def test_api_tokens_expire_record_their_use_and_can_be_revoked_from_the_cli(
    live: Live,
) -> None:
    short = create_token("viewer", "short-lived", timedelta(seconds=2))
    assert live.api("GET", "/dags", short).status == 200
    row = next(t for t in list_tokens("viewer") if t.description == "short-lived")
    assert row.last_used_at is not None and row.expires_at is not None
    wait_until(lambda: live.api("GET", "/dags", short).status == 401, timeout=10, step=0.5)

    runner = CliRunner()
    listing = runner.invoke(cli, ["users", "tokens", "viewer"])
    assert listing.exit_code == 0, listing.output
    assert "short-lived" in listing.output and "(expired)" in listing.output
    assert short not in listing.output and live.tokens["viewer"] not in listing.output

    created = runner.invoke(
        cli, ["users", "token", "viewer", "--description", "ci", "--expires-in", "30"]
    )
    token = created.output.strip()
    assert created.exit_code == 0 and token.startswith("fst_")
    assert live.api("GET", "/dags", token).status == 200
    token_id = next(t.id for t in list_tokens("viewer") if t.description == "ci")
    revoked = runner.invoke(cli, ["users", "revoke-token", str(token_id)])
    assert revoked.exit_code == 0 and f"revoked token {token_id} of viewer" in revoked.output
    assert live.api("GET", "/dags", token).status == 401
    assert live.api("GET", "/dags", live.tokens["viewer"]).status == 200  # the others stay
    missing = runner.invoke(cli, ["users", "revoke-token", str(token_id)])
    assert missing.exit_code != 0 and f"no API token {token_id}" in missing.output


def test_a_user_cannot_revoke_another_users_token(live: Live) -> None:
    viewer = live.client("viewer")
    theirs = next(t.id for t in list_tokens("op"))
    reply = viewer.post(f"/tokens/{theirs}/revoke", {"csrf_token": viewer.csrf("/tokens")})
    assert reply.status == 404
    assert live.api("GET", "/dags", live.tokens["op"]).status == 200
    assert "op" not in [t.username for t in list_tokens("viewer")]
    page = viewer.get("/tokens")
    assert page.status == 200 and f'id="token-{theirs}"' not in page.text


# -- secrets ---------------------------------------------------------------
@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("a", "1 characters long, at least 32"),
        ("lab-only-secret-key-not-for-production", "published example value"),
        ("CHANGE-ME-secret-key-0123456789abcdef", "published example value"),
        ("x" * 40, "too few distinct characters"),
    ],
)
def test_weak_secret_keys_are_refused_when_the_config_is_loaded(
    tmp_path: Path, value: str, reason: str
) -> None:
    config = tmp_path / "flowsched.cfg"
    config.write_text(f"[core]\nsecret_key = {value}\n")
    with pytest.raises(ConfigError, match=reason) as caught:
        load_config(config, environ={})
    assert "[core] secret_key = <hidden>" in str(caught.value)
    assert f"= {value!r}" not in str(caught.value)  # the refused secret is not printed
    env = {"FLOWSCHED__CORE__SECRET_KEY": value}
    with pytest.raises(ConfigError, match="FLOWSCHED__CORE__SECRET_KEY"):
        load_config(tmp_path / "none.cfg", environ=env)
    strong = load_config(
        tmp_path / "none.cfg", environ={"FLOWSCHED__CORE__SECRET_KEY": STRONG_SECRET}
    )
    assert strong.core.secret_key == STRONG_SECRET


def test_the_webserver_refuses_to_start_with_a_weak_secret_key(sqlite_home) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "flowsched", "webserver", "--bind", f"127.0.0.1:{free_port()}"],
        env={**os.environ, **sqlite_home.env, "FLOWSCHED__CORE__SECRET_KEY": "a"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    assert "secret_key" in result.stderr and "at least 32" in result.stderr


def test_guessable_passwords_are_refused(sqlite_home) -> None:
    for username, password in (("dana", "short"), ("dana", "password"), ("danadana", "DanaDana")):
        with pytest.raises(UserError, match="password too"):
            create_user(username, password, "viewer")
    create_user("dana", "a-long-passphrase", "viewer")


# -- debug server ----------------------------------------------------------
def _listening_addresses(port: int) -> set[str]:
    """Local addresses with a LISTEN socket on ``port``, from /proc/net/tcp."""
    found = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        local, state = line.split()[1], line.split()[3]
        address, hex_port = local.split(":")
        if int(hex_port, 16) == port and state == "0A":
            found.add(".".join(str(int(address[i : i + 2], 16)) for i in (6, 4, 2, 0)))
    return found


def test_debug_mode_listens_on_loopback_only(sqlite_home) -> None:
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "flowsched", "webserver", "--debug", "--bind", f"0.0.0.0:{port}"],
        env={**os.environ, **sqlite_home.env},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        wait_for_port(port, timeout=60, proc=process)
        assert _listening_addresses(port) == {"127.0.0.1"}
    finally:
        process.terminate()
        _, err = process.communicate(timeout=30)
    assert b"--debug listens on 127.0.0.1 only" in err


# -- secret files ----------------------------------------------------------
def test_secret_files_are_created_private_never_chmod_ed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from flowsched.standalone import initialise_home
    from flowsched.web.server import ensure_standalone_admin

    chmodded: list[str] = []
    real_chmod = os.chmod

    def recording_chmod(path, *args, **kwargs):
        chmodded.append(os.fspath(path))
        return real_chmod(path, *args, **kwargs)

    home = tmp_path / "home"
    monkeypatch.setenv("FLOWSCHED_HOME", str(home))
    monkeypatch.delenv("FLOWSCHED_CONFIG", raising=False)
    monkeypatch.setattr(os, "chmod", recording_chmod)  # Path.chmod and shutil use it too
    old = os.umask(0o022)
    try:
        initialise_home()
        created = ensure_standalone_admin(home)
    finally:
        os.umask(old)
        from flowsched.config import set_config
        from flowsched.db.engine import reset_engine

        reset_engine()
        set_config(None)
    assert created is not None
    for path in (home / "flowsched.cfg", created[1]):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
        assert str(path) not in chmodded  # private from creation, not made private later
    assert chmodded, "the recorder saw the example DAG copies: it does watch chmod"


# -- run conf size ---------------------------------------------------------
def test_a_run_conf_over_the_limit_is_refused_by_api_page_and_cli(live: Live, home) -> None:
    home.write_dag("other.py", OTHER)
    assert not process_folder().errors
    big = {"blob": "x" * CONF_LIMIT}

    reply = live.api("POST", "/dags/other_dag/runs", live.tokens["op"], {"conf": big})
    assert reply.status == 400
    detail = reply.json()["detail"]
    assert f"more than the {CONF_LIMIT} allowed ([core] max_run_conf_size)" in detail, detail

    op = live.client("op")
    page = op.post(
        "/dags/other_dag/trigger",
        {"conf": '{"blob": "' + "y" * CONF_LIMIT + '"}', "csrf_token": op.csrf("/dags")},
    )
    assert page.status == 400 and "max_run_conf_size" in page.text

    conf = '{"b": "' + "z" * CONF_LIMIT + '"}'
    result = CliRunner().invoke(cli, ["dags", "trigger", "other_dag", "--conf", conf])
    assert result.exit_code != 0 and "max_run_conf_size" in result.output, result.output
    with session_scope() as session:
        assert session.scalars(select(DagRun.id)).all() == []
    # just under the limit is fine
    small = {"blob": "x" * (CONF_LIMIT - 20)}
    assert (
        live.api("POST", "/dags/other_dag/runs", live.tokens["op"], {"conf": small}).status == 201
    )


def test_user_and_token_management_is_audited(live: Live) -> None:
    runner = CliRunner()
    steps = [
        ["users", "create", "erin", "--role", "viewer", "--password", "erin-long-password"],
        ["users", "token", "erin", "--description", "ci"],
        ["users", "reset-password", "erin", "--password", "erin-other-password"],
        ["users", "token", "erin", "--revoke-all"],
        ["users", "delete", "erin", "--yes"],
    ]
    for args in steps:
        result = runner.invoke(cli, args)
        assert result.exit_code == 0, result.output
    reply = live.api("GET", "/eventLogs?size=100", live.tokens["admin"])
    body = check_live("GET", "/eventLogs", reply)
    erin = [
        (e["event"], e["actor"])
        for e in reversed(body["event_logs"])
        if (e["extra"] or {}).get("user") == "erin"
    ]
    assert erin == [
        ("user_create", "cli"),
        ("token_create", "cli"),
        ("password_reset", "cli"),
        ("token_revoke", "cli"),
        ("user_delete", "cli"),
    ]
    assert "erin-long-password" not in reply.text  # never a password


def test_changing_ones_password_on_the_page_ends_the_other_sessions(live: Live) -> None:
    here = live.client("viewer")
    elsewhere = live.client("viewer")
    form = {
        "current_password": "wrong-current",
        "new_password": "a-brand-new-passphrase",
        "confirm_password": "a-brand-new-passphrase",
    }
    refused = here.post("/account/password", {**form, "csrf_token": here.csrf("/tokens")})
    assert refused.status == 400 and "the current password is wrong" in refused.text
    assert elsewhere.get("/dags").status == 200  # nothing changed

    form["current_password"] = PASSWORD
    reply = here.post("/account/password", {**form, "csrf_token": here.csrf("/tokens")})
    assert reply.status == 302 and reply.location == "/tokens"
    assert here.get("/dags").status == 200  # this browser goes on
    assert elsewhere.get("/dags").status == 302  # every other session ended
    assert live.client().login("viewer").status == 401  # the old password is gone
    assert live.client().login("viewer", "a-brand-new-passphrase").status == 302
