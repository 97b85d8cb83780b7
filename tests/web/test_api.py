"""The REST API: token auth, roles, every route validated against the served OpenAPI spec."""

from __future__ import annotations

from openapi_spec_validator import validate
from sqlalchemy import select

from flowsched.db.engine import session_scope
from flowsched.db.models import Dag, DagRun
from flowsched.web.openapi import spec
from tests.web.openapi_check import check
from tests.web.proxy import TcpProxy


def test_spec_is_valid_openapi_and_served_without_auth(sqlite_web):
    validate(spec())
    response = sqlite_web.client().get("/api/v1/openapi.json")
    assert response.status_code == 200 and response.get_json() == spec()


def test_token_is_required_and_checked(sqlite_seeded):
    web, _ = sqlite_seeded
    client = web.client()
    for headers in ({}, {"Authorization": "Bearer fst_wrong"}, {"Authorization": "Basic x"}):
        response = client.get("/api/v1/dags", headers=headers)
        assert response.status_code == 401
        assert response.headers["WWW-Authenticate"].startswith("Bearer")
        assert check(response)["title"] == "Unauthorized"
    # a logged-in browser session is not API auth: no cookie-borne (CSRF-able) API calls
    browser = web.client("admin")
    assert browser.post("/api/v1/dags/pipeline/runs", json={}).status_code == 401


def test_reads(seeded):
    web, runs = seeded
    client = web.client()
    auth = web.api("viewer")
    listing = check(client.get("/api/v1/dags", headers=auth))
    assert [d["dag_id"] for d in listing["dags"]] == ["other_dag", "pipeline"]
    pipeline = listing["dags"][1]
    assert pipeline["last_run"]["run_id"] == runs["live"]
    assert pipeline["recent_runs"] == {"success": 1, "failed": 1, "running": 1}
    assert pipeline["last_run"]["logical_date"].endswith("+08:00")
    assert listing["paging"] == {"page": 1, "size": 50, "total": 2}
    tagged = check(client.get("/api/v1/dags?tag=team-b&size=1", headers=auth))
    assert [d["dag_id"] for d in tagged["dags"]] == ["other_dag"]
    dag = check(client.get("/api/v1/dags/pipeline", headers=auth))
    assert [t["task_id"] for t in dag["tasks"]] == ["extract", "load", "report"]
    assert dag["tasks"][0]["downstream"] == ["load"]
    versions = check(client.get("/api/v1/dags/pipeline/versions", headers=auth))
    assert [v["version_number"] for v in versions["versions"]] == [1]
    version = check(client.get("/api/v1/dags/pipeline/versions/1", headers=auth))
    assert "echo report" in version["source"]
    run_list = check(client.get("/api/v1/dags/pipeline/runs?state=failed", headers=auth))
    assert [r["run_id"] for r in run_list["runs"]] == [runs["bad"]]
    run = check(client.get(f"/api/v1/dags/pipeline/runs/{runs['bad']}", headers=auth))
    assert run["conf"]["name"] == "bad" and run["dag_version"] == 1
    tis = check(client.get(f"/api/v1/dags/pipeline/runs/{runs['bad']}/tasks", headers=auth))
    assert {t["task_id"]: t["state"] for t in tis["task_instances"]} == {
        "extract": "success",
        "load": "failed",
        "report": "upstream_failed",
    }
    ti = check(client.get(f"/api/v1/dags/pipeline/runs/{runs['bad']}/tasks/load", headers=auth))
    assert ti["state"] == "failed" and ti["tries"] == []
    errors = check(client.get("/api/v1/import-errors", headers=auth))
    assert errors == {"import_errors": []}
    workers = check(client.get("/api/v1/workers", headers=auth))
    assert workers["executor"] == "local" and workers["workers"] == []
    health = check(client.get("/api/v1/health"))
    assert health["metadatabase"] == "healthy" and health["scheduler"] == "unhealthy"


def test_not_found_and_bad_input_are_json(seeded):
    web, runs = seeded
    client = web.client()
    auth = web.api("admin")
    for url in [
        "/api/v1/dags/nope",
        "/api/v1/dags/nope/runs",
        "/api/v1/dags/pipeline/runs/nope",
        f"/api/v1/dags/pipeline/runs/{runs['ok']}/tasks/nope",
        "/api/v1/dags/pipeline/versions/7",
        f"/api/v1/dags/pipeline/runs/{runs['ok']}/tasks/load/tries/1/log",
    ]:
        response = client.get(url, headers=auth)
        assert response.status_code == 404, url
        assert check(response)["status"] == 404
    assert client.get("/api/v1/no/such/route", headers=auth).get_json()["status"] == 404
    bad_json = client.post(
        "/api/v1/dags/pipeline/runs",
        data="{not json",
        headers={**auth, "Content-Type": "application/json"},
    )
    assert bad_json.status_code == 400
    assert "not valid JSON" in check(bad_json)["detail"]
    for body, message in [
        ({"conf": [1, 2]}, "'conf' must be a JSON object"),
        ({"conf": "{oops"}, "conf is not valid JSON"),
        ({"colour": "red"}, "unknown field(s): colour"),
        ({"logical_date": "soon"}, "logical_date"),
    ]:
        response = client.post("/api/v1/dags/pipeline/runs", json=body, headers=auth)
        assert response.status_code == 400, body
        assert message in check(response)["detail"]
    assert (
        client.patch("/api/v1/dags/pipeline", json={"is_paused": "yes"}, headers=auth).status_code
        == 400
    )
    with session_scope() as session:
        assert len(session.scalars(select(DagRun.id)).all()) == 3


def test_actions_and_roles(seeded):
    web, runs = seeded
    client = web.client()
    viewer, op, admin = web.api("viewer"), web.api("op"), web.api("admin")
    denied = [
        ("post", "/api/v1/dags/pipeline/runs", {"conf": {}}, viewer),
        ("patch", "/api/v1/dags/pipeline", {"is_paused": True}, viewer),
        ("post", "/api/v1/dags/pipeline/clear", {"only_failed": True}, viewer),
        ("patch", f"/api/v1/dags/pipeline/runs/{runs['ok']}/tasks/load", {"state": "failed"}, op),
        ("delete", "/api/v1/dags/pipeline", None, op),
    ]
    for method, url, body, auth in denied:
        response = getattr(client, method)(url, json=body, headers=auth)
        assert response.status_code == 403, url
        assert check(response)["title"] == "Forbidden"

    created = client.post(
        "/api/v1/dags/pipeline/runs",
        json={"conf": {"k": "v"}, "run_id": "api_run", "logical_date": "2026-11-24T08:00:00+08:00"},
        headers=op,
    )
    assert created.status_code == 201
    run = check(created)
    assert run["run_id"] == "api_run" and run["conf"] == {"k": "v"} and run["state"] == "queued"
    assert run["logical_date"] == "2026-11-24T08:00:00+08:00"
    paused = check(client.patch("/api/v1/dags/pipeline", json={"is_paused": True}, headers=op))
    assert paused["is_paused"] is True
    cleared = check(
        client.post(
            "/api/v1/dags/pipeline/clear",
            json={"run_id": runs["bad"], "only_failed": True, "downstream": True},
            headers=op,
        )
    )
    assert sorted(c["task_id"] for c in cleared["cleared"]) == ["load", "report"]
    marked = check(
        client.patch(
            f"/api/v1/dags/pipeline/runs/{runs['ok']}/tasks/load",
            json={"state": "failed"},
            headers=admin,
        )
    )
    assert marked["state"] == "failed"
    refused = client.delete("/api/v1/dags/pipeline", headers=admin)
    assert refused.status_code == 400 and "queued or running" in check(refused)["detail"]
    deleted = check(client.delete("/api/v1/dags/pipeline?force=true", headers=admin))
    assert deleted["deleted"]["dag_run"] == 4
    with session_scope() as session:
        assert session.get(Dag, "pipeline") is None


def test_database_outage_shows_503_and_recovers(mysql_home, mariadb_server):
    proxy = TcpProxy(mariadb_server.port)
    proxy.start()
    url = mysql_home.url.replace(f":{mariadb_server.port}/", f":{proxy.port}/")
    mysql_home.configure(database={"sql_alchemy_conn": url, "connect_timeout": "2"})
    from tests.web.conftest import make_web

    web = make_web(mysql_home)
    browser = web.client("viewer")
    client = web.client()
    assert browser.get("/dags").status_code == 200
    proxy.stop()
    try:
        page = browser.get("/dags")
        assert page.status_code == 503
        assert page.headers["Retry-After"] == "10"
        assert "Metadata database unavailable" in page.text
        assert 'http-equiv="refresh"' in page.text and "Traceback" not in page.text
        assert "flowsched-test" not in page.text  # the password never shows
        api = client.get("/api/v1/dags", headers=web.api("viewer"))
        assert api.status_code == 503 and check(api)["status"] == 503
        health = client.get("/api/v1/health")
        assert health.status_code == 503 and check(health)["metadatabase"] == "unhealthy"
    finally:
        proxy.start()
    assert browser.get("/dags").status_code == 200  # same session: it was never lost
    assert check(client.get("/api/v1/health"))["metadatabase"] == "healthy"
    proxy.stop()
