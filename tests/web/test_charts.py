"""The chart pages and their API over plain HTTP: figures, roles, the OpenAPI contract.

The data are real runs (tests/web/chart_data.py), on SQLite and MariaDB.
The browser checks (bars, colours, dark theme) are in test_chart_pages.py.
"""

from __future__ import annotations

import re
from collections import Counter

import pytest
from sqlalchemy import update

from flowsched.config import get_config
from flowsched.db.engine import session_scope
from flowsched.db.models import TaskInstance
from flowsched.operations import set_pool
from flowsched.state import RunState, TaskState
from tests.web.chart_data import TRIES_BAD, TRIES_GOOD, seed_charted
from tests.web.openapi_check import check

PAGES = (
    "/dags/charted/gantt",
    "/dags/charted/gantt?run_id=manual__bad",
    "/dags/charted/duration",
    "/dags/charted/duration?num_runs=1",
    "/dags/charted/landing_times",
    "/dags/charted/calendar",
    "/cluster_activity",
)
API = (
    "/api/v1/dags/charted/runs/manual__bad/gantt",
    "/api/v1/dags/charted/taskDurations",
    "/api/v1/dags/charted/landingTimes?num_runs=2",
    "/api/v1/dags/charted/calendar?days=30",
    "/api/v1/clusterActivity",
)


@pytest.fixture
def charted(home, web):
    return web, seed_charted(home)


def test_chart_data_and_pages_match_the_runs(charted):
    web, runs = charted
    api = web.api("viewer")
    client = web.app.test_client()

    gantt = check(client.get(f"/api/v1/dags/charted/runs/{runs.bad_run}/gantt", headers=api))
    assert Counter(t["task_id"] for t in gantt["tries"]) == TRIES_BAD
    assert gantt["task_ids"] == ["first", "flaky", "last"]
    flaky = [t for t in gantt["tries"] if t["task_id"] == "flaky"]
    assert [(t["try_number"], t["state"]) for t in flaky] == [(1, "failed"), (2, "success")]
    for attempt in gantt["tries"]:  # queued, then started, then ended
        assert attempt["queued_at"] <= attempt["start_date"] <= attempt["end_date"]
        assert attempt["duration"] >= 0 and attempt["queued_duration"] >= 0

    durations = check(client.get("/api/v1/dags/charted/taskDurations", headers=api))
    assert [r["run_id"] for r in durations["runs"]] == [runs.bad_run, runs.good_run]
    assert Counter(t["task_id"] for t in durations["tries"]) == Counter(TRIES_BAD) + Counter(
        TRIES_GOOD
    )
    newest = check(client.get("/api/v1/dags/charted/taskDurations?num_runs=1", headers=api))
    assert {t["run_id"] for t in newest["tries"]} == {runs.good_run}

    landing = check(client.get("/api/v1/dags/charted/landingTimes", headers=api))
    assert len(landing["landing_times"]) == 6  # three tasks, two runs, all finished
    assert {(x["task_id"], x["run_id"], x["state"]) for x in landing["landing_times"]} >= {
        ("last", runs.bad_run, "failed"),
        ("flaky", runs.bad_run, "success"),
    }

    calendar = check(client.get("/api/v1/dags/charted/calendar", headers=api))
    days = {d["date"]: d for d in calendar["days"]}
    assert days[runs.bad_day.isoformat()]["state"] == "failed"
    assert days[runs.good_day.isoformat()] == {
        "date": runs.good_day.isoformat(),
        "state": "success",
        "counts": {"success": 1},
    }
    short = check(client.get("/api/v1/dags/charted/calendar?days=2", headers=api))
    assert runs.bad_day.isoformat() not in {d["date"] for d in short["days"]}
    assert calendar["truncated"] is False

    # the pages draw the same figures: one shape per try, one bar per try
    page = web.client("viewer")
    html = page.get(f"/dags/charted/gantt?run_id={runs.bad_run}").text
    assert html.count('<g class="try ') == 4
    assert len(re.findall(r'<g class="try s-\w+" data-task-id="flaky"', html)) == 2
    assert "flaky, try 1: failed; queued " in html  # the tooltip carries the figures
    html = page.get("/dags/charted/duration").text
    assert html.count('<rect class="bar ') == 7
    html = page.get("/dags/charted/calendar").text
    failed_day = re.search(rf'class="day s-(\w+)" data-date="{runs.bad_day.isoformat()}"', html)
    assert failed_day and failed_day.group(1) == "failed"
    assert page.get("/dags/charted/landing_times").text.count('<rect class="bar ') == 6
    # linked from the DAG header and the run page
    grid = page.get("/dags/charted").text
    for href in ("/dags/charted/gantt", "/dags/charted/duration", "/dags/charted/calendar"):
        assert f'href="{href}"' in grid
    run_page = page.get(f"/dags/charted/runs/{runs.bad_run}").text
    assert f'href="/dags/charted/gantt?run_id={runs.bad_run}"' in run_page


def test_cluster_activity_counts_pools_queues_and_running_tries(charted):
    web, runs = charted
    set_pool("reports", 3, "for the test")
    # one try running on a worker, one queued on a queue, as the lifecycle leaves them
    with session_scope() as session:
        for task_id, values in (
            (
                "first",
                {"state": "running", "hostname": "10.0.0.7", "worker_nodename": "w1@10.0.0.7"},
            ),
            ("flaky", {"state": "queued", "queue": "reports_q"}),
        ):
            session.execute(
                update(TaskInstance)
                .where(TaskInstance.run_id == runs.good_run, TaskInstance.task_id == task_id)
                .values(pool="reports", **values)
            )
    client = web.app.test_client()
    body = check(client.get("/api/v1/clusterActivity", headers=web.api("viewer")))
    pools = {p["name"]: p for p in body["pools"]}
    assert pools["reports"] == {
        "name": "reports",
        "slots": 3,
        "running": 1,
        "queued": 1,
        "scheduled": 0,
        "open": 1,
    }
    assert body["queues"] == [{"queue": "reports_q", "queued": 1}]
    assert body["workers"] == [
        {"name": "w1@10.0.0.7", "hostname": "10.0.0.7", "busy": 1, "slots": None}
    ]
    assert body["states"] == {"running": 1, "queued": 1}
    assert body["executor"] == "local"
    page = web.client("viewer").get("/cluster_activity")
    assert page.status_code == 200
    assert 'id="cluster-region" data-live="on"' in page.text
    assert 'aria-label="reports: 1 running, 1 queued, 1 open of 3 slots"' in page.text
    assert 'aria-label="reports_q: 1 tries queued"' in page.text
    slots = get_config().core.parallelism  # the local executor's slots
    assert f'aria-label="10.0.0.7: 1 of {slots} slots busy"' in page.text


def test_viewer_sees_charts_and_anonymous_is_sent_to_login(charted):
    web, _ = charted
    viewer = web.client("viewer")
    anonymous = web.app.test_client()
    for url in PAGES:
        assert viewer.get(url).status_code == 200, url
        refused = anonymous.get(url)
        assert refused.status_code == 302 and "/login?next=" in refused.location, url
    for url in API:
        check(web.app.test_client().get(url, headers=web.api("viewer")))
        assert anonymous.get(url).status_code == 401, url
    css = viewer.get("/charts/states.css")
    assert css.mimetype == "text/css"
    for state in [*TaskState, *RunState]:  # a new state gets its rule without touching CSS
        assert f".s-{state.value} {{ --state: var(--s-{state.value}, var(--s-none)); }}" in css.text


def test_unknown_dag_or_run_and_bad_numbers(charted):
    web, _ = charted
    client = web.app.test_client()
    api = web.api("viewer")
    missing = client.get("/api/v1/dags/charted/runs/manual__nope/gantt", headers=api)
    assert missing.status_code == 404 and "manual__nope" in check(missing)["detail"]
    assert check(client.get("/api/v1/dags/nope/taskDurations", headers=api))["status"] == 404
    assert check(client.get("/api/v1/dags/nope/calendar", headers=api))["status"] == 404
    viewer = web.client("viewer")
    assert viewer.get("/dags/nope/duration").status_code == 404
    assert viewer.get("/dags/charted/gantt?run_id=manual__nope").status_code == 404
    # out-of-range counts are clamped, not errors
    assert viewer.get("/dags/charted/duration?num_runs=100000").status_code == 200
    assert viewer.get("/dags/charted/calendar?days=-4").status_code == 200


def test_the_calendar_reads_a_bounded_number_of_runs(charted, monkeypatch):
    from flowsched.web import chart_queries

    web, runs = charted
    monkeypatch.setattr(chart_queries, "MAX_CALENDAR_RUNS", 1)
    client = web.app.test_client()
    body = check(client.get("/api/v1/dags/charted/calendar", headers=web.api("viewer")))
    # two runs, one may be read: the days before the newest run's day are not shown
    assert body["truncated"] is True
    assert body["first_day"] > runs.bad_day.isoformat()
    assert [d["date"] for d in body["days"]] == [runs.good_day.isoformat()]
    page = web.client("viewer").get("/dags/charted/calendar").text
    assert 'id="calendar-truncated"' in page
    assert f'data-date="{runs.bad_day.isoformat()}"' not in page
