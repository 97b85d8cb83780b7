"""Params on the web: the API refuses bad ones by name; the trigger page is a form of them."""

from __future__ import annotations

from sqlalchemy import select

from flowsched.db.engine import session_scope
from flowsched.db.models import DagRun
from tests.harness import parse
from tests.test_params import PARAMS_DAG, runs
from tests.web.conftest import post


def test_api_refuses_bad_params_naming_them(home, web):
    home.write_dag("with_params.py", PARAMS_DAG)
    parse()
    api = web.app.test_client()
    reply = api.post(
        "/api/v1/dags/with_params/runs", json={"conf": {"dry": "yes"}}, headers=web.api("op")
    )
    assert reply.status_code == 400
    assert "Invalid input for param 'dry': 'yes' is not of type 'boolean'" in reply.text
    assert runs("with_params") == 0
    ok = api.post(
        "/api/v1/dags/with_params/runs", json={"conf": {"rows": 3}}, headers=web.api("op")
    )
    assert ok.status_code in (200, 201), ok.text


def test_trigger_page_is_a_form_built_from_the_params(home, web):
    home.write_dag("with_params.py", PARAMS_DAG)
    parse()
    client = web.client("op")
    page = client.get("/dags/with_params/trigger").text
    assert 'id="trigger-params"' in page
    assert '<input type="number" step="1" name="param:rows" value="10">' in page
    assert 'name="param:mode"' in page and '<option value="full" selected>' in page
    assert 'type="checkbox" name="param:dry"' in page
    assert "How many rows to load" in page and ">Rows" in page
    assert 'name="conf"' in page  # the raw JSON box is still there
    fields = {
        "param:rows": "1000",
        "param:mode": "incremental",
        "param-shown:dry": "1",
        "param:tables": '["a", "b"]',
        "param:note": "typed",
        "conf": "",
    }
    bad = post(client, "/dags/with_params/trigger", fields)
    assert bad.status_code == 400
    assert "Invalid input for param &#39;rows&#39;: 1000 is greater than the maximum" in bad.text
    assert 'value="1000"' in bad.text  # what was typed is kept for fixing
    good = post(
        client,
        "/dags/with_params/trigger",
        {**fields, "param:rows": "5", "conf": '{"note": "json wins"}', "run_id": "form"},
    )
    assert good.status_code == 302, good.text
    with session_scope() as session:
        conf = session.scalar(select(DagRun.conf).where(DagRun.run_id == "form"))
    assert conf == {
        "rows": 5,
        "mode": "incremental",
        "dry": False,
        "tables": ["a", "b"],
        "note": "json wins",
    }
