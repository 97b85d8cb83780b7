"""The API's clear and mark: Airflow's field names, and unknown fields refused by name."""

from __future__ import annotations

from tests.web.conftest import post
from tests.web.openapi_check import check


def test_clear_refuses_unknown_and_unsupported_fields_naming_them(seeded):
    web, runs = seeded
    client = web.app.test_client()
    op = web.api("op")
    unknown = client.post(
        "/api/v1/dags/pipeline/clear",
        json={"dag_run_id": runs["bad"], "upstream": True, "colour": "red"},
        headers=op,
    )
    assert unknown.status_code == 400
    assert check(unknown)["detail"] == (
        "unknown field(s): colour, upstream (did you mean include_upstream?)"
    )
    unsupported = client.post(
        "/api/v1/dags/pipeline/clear", json={"start_date": "2026-01-01"}, headers=op
    )
    assert unsupported.status_code == 400
    assert "not supported by flowsched: start_date" in check(unsupported)["detail"]


def test_clear_with_airflow_field_names(seeded):
    web, runs = seeded
    client = web.app.test_client()
    op = web.api("op")
    body = {"dag_run_id": runs["bad"], "task_ids": ["load"], "include_upstream": True}
    dry = check(
        client.post("/api/v1/dags/pipeline/clear", json={**body, "dry_run": True}, headers=op)
    )
    assert sorted(c["task_id"] for c in dry["cleared"]) == ["extract", "load"]
    past = check(
        client.post(
            "/api/v1/dags/pipeline/clear",
            json={
                "dag_run_id": runs["bad"],
                "task_ids": ["report"],
                "include_past": True,
                "dry_run": True,
            },
            headers=op,
        )
    )
    assert sorted((c["run_id"], c["task_id"]) for c in past["cleared"]) == [
        (runs["bad"], "report"),
        (runs["ok"], "report"),
    ]
    done = check(
        client.post(
            "/api/v1/dags/pipeline/clear", json={**body, "include_downstream": True}, headers=op
        )
    )
    assert sorted(c["task_id"] for c in done["cleared"]) == ["extract", "load", "report"]
    tis = check(client.get(f"/api/v1/dags/pipeline/runs/{runs['bad']}/tasks", headers=op))
    assert {ti["task_id"]: ti["state"] for ti in tis["task_instances"]} == {
        "extract": "none",
        "load": "none",
        "report": "none",
    }


def test_update_task_instances_state_marks_relatives(seeded):
    web, runs = seeded
    client = web.app.test_client()
    admin = web.api("admin")
    url = "/api/v1/dags/pipeline/updateTaskInstancesState"
    body = {"dag_run_id": runs["bad"], "task_id": "load", "new_state": "success"}
    refused = client.post(url, json={**body, "downstream": True}, headers=admin)
    assert refused.status_code == 400
    assert "downstream (did you mean include_downstream?)" in check(refused)["detail"]
    missing = client.post(url, json={"task_id": "load"}, headers=admin)
    assert "missing field(s): dag_run_id, new_state" in check(missing)["detail"]
    assert client.post(url, json=body, headers=web.api("op")).status_code == 403
    marked = check(client.post(url, json={**body, "include_downstream": True}, headers=admin))
    assert marked["task_instances"] == [
        {"dag_id": "pipeline", "dag_run_id": runs["bad"], "task_id": "load"},
        {"dag_id": "pipeline", "dag_run_id": runs["bad"], "task_id": "report"},
    ]
    tis = check(client.get(f"/api/v1/dags/pipeline/runs/{runs['bad']}/tasks", headers=admin))
    assert {ti["task_id"]: ti["state"] for ti in tis["task_instances"]} == {
        "extract": "success",
        "load": "success",
        "report": "success",
    }


def test_task_page_offers_the_flags_and_the_forms_apply_them(seeded):
    web, runs = seeded
    admin = web.client("admin")
    page = admin.get(f"/dags/pipeline/runs/{runs['bad']}/tasks/load").text
    for form in ("clear-form", "mark-form"):
        section = page[page.index(f'id="{form}"') :]
        section = section[: section.index("</form>")]
        for flag in ("upstream", "downstream", "past", "future"):
            assert f'name="{flag}"' in section, (form, flag)
    cleared = post(
        admin,
        "/dags/pipeline/clear",
        {"run_id": runs["bad"], "task_id": "load", "upstream": "on"},
    )
    assert cleared.status_code == 302
    assert "Cleared 2 task instance(s): extract, load" in admin.get(cleared.location).text
    marked = post(
        admin,
        "/dags/pipeline/mark",
        {"run_id": runs["bad"], "task_id": "load", "state": "failed", "past": "on"},
    )
    assert "Marked 2 task instance(s) failed: load." in admin.get(marked.location).text
    tis = check(
        web.app.test_client().get(
            f"/api/v1/dags/pipeline/runs/{runs['ok']}/tasks", headers=web.api("admin")
        )
    )
    assert {ti["task_id"]: ti["state"] for ti in tis["task_instances"]}["load"] == "failed"
