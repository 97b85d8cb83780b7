"""The REST API and the trigger form refuse a run id that breaks the id rule, and create nothing.

Observed before: ``POST /api/v1/dags/<dag>/runs {"run_id": "a/../../../../elsewhere"}`` by an
Op user wrote task logs outside the log folder, and the API read them back.
"""

from __future__ import annotations

from sqlalchemy import func, select

from flowsched.db.engine import session_scope
from flowsched.db.models import DagRun
from tests.web.conftest import post
from tests.web.openapi_check import check

BAD = [
    ("a/../../../../elsewhere", "it has '/'"),
    ("x" * 300, "300 characters is too long"),
    ("new\nline", "it has '\\n'"),
]


def _runs() -> int:
    with session_scope() as session:
        return session.scalar(select(func.count()).select_from(DagRun)) or 0


def test_the_api_refuses_bad_run_ids_with_the_rule(seeded):
    web, _ = seeded
    client = web.client()
    before = _runs()
    for run_id, why in BAD:
        response = client.post(
            "/api/v1/dags/pipeline/runs", json={"run_id": run_id}, headers=web.api("op")
        )
        assert response.status_code == 400, run_id
        detail = check(response)["detail"]
        assert "invalid run_id" in detail and why in detail, detail
        assert "letters, digits, '_', '.', '-', ':', '+', at most 250 characters" in detail
    number = client.post("/api/v1/dags/pipeline/runs", json={"run_id": 5}, headers=web.api("op"))
    assert number.status_code == 400 and "must be a string" in check(number)["detail"]
    assert _runs() == before
    fine = client.post(
        "/api/v1/dags/pipeline/runs", json={"run_id": "r" * 250}, headers=web.api("op")
    )
    assert fine.status_code == 201 and check(fine)["run_id"] == "r" * 250


def test_the_trigger_form_refuses_bad_run_ids_and_keeps_the_input(seeded):
    web, _ = seeded
    client = web.client("op")
    before = _runs()
    for run_id, why in BAD:
        page = post(client, "/dags/pipeline/trigger", {"conf": "", "run_id": run_id})
        assert page.status_code == 400, run_id
        assert "invalid run_id" in page.text and why.replace("'", "&#39;") in page.text
        assert f'name="run_id" value="{run_id}"' in page.text
    assert _runs() == before
