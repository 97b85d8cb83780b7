"""Why a task is not queued, in the API and on the task page (Airflow's failed dependencies)."""

from __future__ import annotations

from tests.web.openapi_check import check


def test_api_and_task_page_show_what_holds_a_task_back(seeded):
    web, runs = seeded
    client = web.client()
    auth = web.api("viewer")
    base = f"/api/v1/dags/pipeline/runs/{runs['live']}/tasks"
    # 'extract' is running in the live run: 'load' waits on its trigger rule.
    waiting = check(client.get(f"{base}/load/dependencies", headers=auth))
    [dep] = waiting["dependencies"]
    assert dep["name"] == "Trigger Rule"
    assert "'all_success'" in dep["reason"] and "extract=running" in dep["reason"]
    running = check(client.get(f"{base}/extract/dependencies", headers=auth))
    assert running["dependencies"] == [
        {"name": "Task Instance State", "reason": "Task is in the 'running' state."}
    ]
    page = web.client("viewer").get(f"/dags/pipeline/runs/{runs['live']}/tasks/load")
    assert page.status_code == 200
    assert 'id="failed-deps"' in page.text and "extract=running" in page.text
    done = web.client("viewer").get(f"/dags/pipeline/runs/{runs['ok']}/tasks/load")
    assert 'id="failed-deps"' not in done.text
    missing = client.get(f"{base}/nope/dependencies", headers=auth)
    assert missing.status_code == 404
