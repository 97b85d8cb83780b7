"""``/api/v1/connections`` and ``/api/v1/variables``: roles, masking, round trips, the spec."""

from __future__ import annotations

import json

import pytest

from flowsched import Connection, Variable
from flowsched.crypto import generate_key
from tests.web.openapi_check import check


@pytest.fixture
def keyed_web(home, web):
    home.configure(core={"fernet_key": generate_key()})
    return web


def test_connections_api(keyed_web):
    web = keyed_web
    client = web.client()
    body = {
        "connection_id": "wh",
        "conn_type": "mysql",
        "host": "db.internal",
        "port": 3306,
        "login": "etl",
        "password": "Pw-secret-1",
        "extra": {"api_token": "tok-999999", "charset": "utf8mb4"},
        "description": "warehouse",
    }
    for role in ("viewer", "op"):
        refused = client.post("/api/v1/connections", json=body, headers=web.api(role))
        assert (
            refused.status_code == 403 and check(refused)["detail"] == "this needs the admin role"
        )
    created = client.post("/api/v1/connections", json=body, headers=web.api("admin"))
    assert created.status_code == 201, created.text
    shown = check(created)
    assert "password" not in shown and shown["has_password"] is True
    assert json.loads(shown["extra"]) == {"api_token": "***", "charset": "utf8mb4"}
    assert "Pw-secret-1" not in created.text and "tok-999999" not in created.text
    again = client.post("/api/v1/connections", json=body, headers=web.api("admin"))
    assert again.status_code == 409 and "already exists" in check(again)["detail"]

    viewer_list = check(client.get("/api/v1/connections", headers=web.api("viewer")))
    assert viewer_list == {
        "connections": [{"connection_id": "wh", "conn_type": "mysql", "description": "warehouse"}],
        "total_entries": 1,
    }
    assert client.get("/api/v1/connections/wh", headers=web.api("viewer")).status_code == 403
    detail = check(client.get("/api/v1/connections/wh", headers=web.api("op")))
    assert (detail["host"], detail["port"], detail["login"]) == ("db.internal", 3306, "etl")

    # a GET-modify-PATCH round trip keeps the masked extra field and the password
    extra = json.loads(detail["extra"])
    extra["charset"] = "latin1"
    patched = client.patch(
        "/api/v1/connections/wh",
        json={"host": "db2.internal", "extra": json.dumps(extra)},
        headers=web.api("admin"),
    )
    assert check(patched)["host"] == "db2.internal"
    stored = Connection.get("wh")
    assert stored.password == "Pw-secret-1"
    assert stored.extra_dejson == {"api_token": "tok-999999", "charset": "latin1"}
    cleared = check(
        client.patch("/api/v1/connections/wh", json={"password": None}, headers=web.api("admin"))
    )
    assert cleared["has_password"] is False and Connection.get("wh").password is None

    bad = client.patch("/api/v1/connections/wh", json={"port": "x"}, headers=web.api("admin"))
    assert bad.status_code == 400 and "'port' must be an integer" in check(bad)["detail"]
    bad = client.patch("/api/v1/connections/wh", json={"extra": "{no"}, headers=web.api("admin"))
    assert bad.status_code == 400 and "extra is not valid JSON" in check(bad)["detail"]
    bad = client.post(
        "/api/v1/connections", json={"connection_id": "a b", "conn_type": "x"},
        headers=web.api("admin"),
    )  # fmt: skip
    assert bad.status_code == 400 and "conn_id 'a b'" in check(bad)["detail"]
    gone = client.delete("/api/v1/connections/wh", headers=web.api("admin"))
    assert gone.status_code == 204
    missing = client.get("/api/v1/connections/wh", headers=web.api("admin"))
    assert missing.status_code == 404 and check(missing)["title"] == "Not Found"
    assert client.delete("/api/v1/connections/wh", headers=web.api("admin")).status_code == 404


def test_variables_api(keyed_web):
    web = keyed_web
    client = web.client()
    refused = client.post(
        "/api/v1/variables", json={"key": "env", "value": "prod"}, headers=web.api("viewer")
    )
    assert refused.status_code == 403
    for key, value in (("env", "prod"), ("db_password", "Pw-var-secret")):
        created = client.post(
            "/api/v1/variables",
            json={"key": key, "value": value, "description": f"the {key}"},
            headers=web.api("op"),
        )
        assert created.status_code == 201, created.text
    assert check(created) == {
        "key": "db_password",
        "value": "***",
        "description": "the db_password",
        "sensitive": True,
    }
    as_op = check(client.get("/api/v1/variables", headers=web.api("op")))
    assert {v["key"]: v["value"] for v in as_op["variables"]} == {
        "db_password": "***",
        "env": "prod",
    }
    as_viewer = check(client.get("/api/v1/variables", headers=web.api("viewer")))
    assert [v["value"] for v in as_viewer["variables"]] == [None, None]
    assert check(client.get("/api/v1/variables/env", headers=web.api("viewer")))["value"] is None
    assert "Pw-var-secret" not in client.get("/api/v1/variables", headers=web.api("admin")).text

    kept = client.patch(
        "/api/v1/variables/db_password",
        json={"value": "***", "description": "changed"},
        headers=web.api("op"),
    )
    assert check(kept)["description"] == "changed"
    assert Variable.get("db_password") == "Pw-var-secret"
    client.patch("/api/v1/variables/env", json={"value": "staging"}, headers=web.api("op"))
    assert Variable.get("env") == "staging"
    duplicate = client.post(
        "/api/v1/variables", json={"key": "env", "value": "x"}, headers=web.api("op")
    )
    assert duplicate.status_code == 409 and check(duplicate)["status"] == 409
    assert client.delete("/api/v1/variables/env", headers=web.api("op")).status_code == 204
    missing = client.delete("/api/v1/variables/env", headers=web.api("op"))
    assert missing.status_code == 404 and "no variable 'env'" in check(missing)["detail"]


def test_without_a_fernet_key_the_api_refuses_to_store(sqlite_web):
    client = sqlite_web.client()
    response = client.post(
        "/api/v1/variables", json={"key": "k", "value": "v"}, headers=sqlite_web.api("op")
    )
    assert response.status_code == 400
    assert "refusing to store variable 'k': core.fernet_key is empty" in check(response)["detail"]
    assert check(client.get("/api/v1/variables", headers=sqlite_web.api("op")))["variables"] == []
