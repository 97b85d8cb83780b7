"""Task groups on the graph (collapsible boxes) and the grid (expandable rows).

Server-rendered checks run on SQLite and MariaDB; one Chromium check clicks
through opening and closing a group as a user would.
"""

from __future__ import annotations

import re

from playwright.sync_api import expect
from sqlalchemy import update

from flowsched.dag_processor import process_folder
from flowsched.db.engine import session_scope
from flowsched.db.models import TaskInstance
from flowsched.operations import trigger_dag
from flowsched.web.users import create_user
from tests.web import test_e2e
from tests.web.test_e2e import PASSWORD, Stack, log_in, new_page, shot

browser = test_e2e.browser  # the module-scoped Chromium fixture, shared

GROUPED = """
from datetime import datetime
from flowsched import DAG, BashOperator, TaskGroup

with DAG("grouped", schedule=None, start_date=datetime(2026, 1, 1)) as dag:
    start = BashOperator(task_id="start", bash_command="true")
    with TaskGroup("extract", tooltip="pull the sources") as extract:
        a = BashOperator(task_id="a", bash_command="true")
        with TaskGroup("inner") as inner:
            BashOperator(task_id="b", bash_command="true")
        a >> inner
    end = BashOperator(task_id="end", bash_command="true")
    start >> extract >> end
"""

NODE = re.compile(
    r'<g class="node( group)? s-([a-z_]+)" data-(?:task|group)-id="([^"]+)">\s*<title>[^<]*</title>'
    r'\s*<rect x="([\d.]+)" y="([\d.]+)" width="([\d.]+)" height="([\d.]+)"'
)
FRAME = re.compile(
    r'<g class="group-frame" data-group-id="([^"]+)">\s*<title>[^<]*</title>'
    r'\s*<rect x="([\d.-]+)" y="([\d.-]+)" width="([\d.]+)" height="([\d.]+)"'
)


def seed(home) -> str:
    home.write_dag("grouped.py", GROUPED)
    assert not process_folder().errors
    run = trigger_dag("grouped", run_id="manual__seeded")
    states = {"start": "success", "extract.a": "success", "extract.inner.b": "failed"}
    with session_scope() as session:
        for task_id, state in states.items():
            session.execute(
                update(TaskInstance)
                .where(TaskInstance.dag_run_id == run.id, TaskInstance.task_id == task_id)
                .values(state=state, try_number=1)
            )
    return run.run_id


def nodes_of(text: str) -> dict[str, tuple[bool, str, tuple[float, ...]]]:
    return {
        node: (bool(group), state, tuple(float(v) for v in box))
        for group, state, node, *box in NODE.findall(text)
    }


def inside(box: tuple[float, ...], frame: tuple[float, ...]) -> bool:
    x, y, w, h = box
    fx, fy, fw, fh = frame
    return fx <= x and x + w <= fx + fw and fy <= y and y + h <= fy + fh


def test_graph_draws_closed_groups_as_one_box_and_open_ones_as_frames(home, web):
    run_id = seed(home)
    client = web.client("viewer")
    closed = client.get(f"/dags/grouped/graph?run_id={run_id}").text
    nodes = nodes_of(closed)
    # Closed (the default, as in Airflow): one box for the group, its worst state.
    assert {n: (g, s) for n, (g, s, _) in nodes.items()} == {
        "start": (False, "success"),
        "extract": (True, "failed"),
        "end": (False, "none"),
    }
    assert "2 tasks" in closed and "pull the sources" in closed
    assert closed.count('class="edge"') == 2  # start -> extract -> end
    assert not FRAME.findall(closed)

    opened = client.get(f"/dags/grouped/graph?run_id={run_id}&expand=extract").text
    nodes = nodes_of(opened)
    assert {n: (g, s) for n, (g, s, _) in nodes.items()} == {
        "start": (False, "success"),
        "extract.a": (False, "success"),
        "extract.inner": (True, "failed"),
        "end": (False, "none"),
    }
    frames = {g: tuple(float(v) for v in box) for g, *box in FRAME.findall(opened)}
    assert list(frames) == ["extract"]
    assert inside(nodes["extract.a"][2], frames["extract"])
    assert inside(nodes["extract.inner"][2], frames["extract"])
    assert not inside(nodes["start"][2], frames["extract"])
    assert not inside(nodes["end"][2], frames["extract"])
    assert opened.count('class="edge"') == 3  # start -> a -> inner -> end
    # Each group links to the address that toggles it; the run stays chosen.
    assert f"run_id={run_id}&amp;expand=extract&amp;expand=extract.inner" in opened

    everything = client.get(f"/dags/grouped/graph?run_id={run_id}&expand=all").text
    assert set(nodes_of(everything)) == {"start", "extract.a", "extract.inner.b", "end"}
    frames = {g: tuple(float(v) for v in box) for g, *box in FRAME.findall(everything)}
    assert inside(frames["extract.inner"], frames["extract"])
    # An unknown group in the address is ignored, not an error.
    assert client.get("/dags/grouped/graph?expand=nope").status_code == 200


def grid_rows(text: str) -> list[tuple[str, str]]:
    return re.findall(r'<tr (?:class="group-row[^"]*" data-group-id|data-task-id)="([^"]+)"', text)


def test_grid_shows_groups_as_expandable_rows_with_a_summary_state(home, web):
    seed(home)
    client = web.client("viewer")
    closed = client.get("/dags/grouped").text
    assert grid_rows(closed) == ["start", "extract", "end"]
    assert re.search(r'class="cell group s-failed"', closed)
    opened = client.get("/dags/grouped?expand=extract").text
    assert grid_rows(opened) == ["start", "extract", "extract.a", "extract.inner", "end"]
    everything = client.get("/dags/grouped?expand=all").text
    assert grid_rows(everything) == [
        "start",
        "extract",
        "extract.a",
        "extract.inner",
        "extract.inner.b",
        "end",
    ]
    # A task row links to its task page by the full id.
    assert "/tasks/extract.inner.b" in everything


def test_browser_opens_and_closes_a_group_in_graph_and_grid(sqlite_home, browser):
    seed(sqlite_home)
    create_user("gina", PASSWORD, "viewer")
    stack = Stack(sqlite_home)
    try:
        base = stack.webserver()
        page = new_page(browser)
        log_in(page, base, "gina")
        page.goto(f"{base}/dags/grouped/graph")
        group = page.locator('g.node.group[data-group-id="extract"]')
        expect(group).to_be_visible()
        expect(page.locator('g[data-task-id="extract.a"]')).to_have_count(0)
        group.click()
        expect(page.locator('g[data-task-id="extract.a"]')).to_be_visible()
        expect(page.locator('g.group-frame[data-group-id="extract"]')).to_be_visible()
        page.locator('g.node.group[data-group-id="extract.inner"]').click()
        expect(page.locator('g[data-task-id="extract.inner.b"]')).to_be_visible()
        shot(page, "graph-task-groups-open")
        page.locator('g.group-frame[data-group-id="extract"] text').click()
        expect(page.locator('g.node.group[data-group-id="extract"]')).to_be_visible()
        expect(page.locator('g[data-task-id="extract.a"]')).to_have_count(0)

        page.goto(f"{base}/dags/grouped")
        expect(page.locator('tr[data-task-id="extract.a"]')).to_have_count(0)
        page.locator('tr[data-group-id="extract"] a.group-toggle').click()
        expect(page.locator('tr[data-task-id="extract.a"]')).to_be_visible()
        expect(page.locator('tr[data-group-id="extract"] a.group-toggle')).to_have_attribute(
            "aria-expanded", "true"
        )
        padding = "e => parseFloat(getComputedStyle(e).paddingLeft)"
        inner = page.locator('tr[data-task-id="extract.a"] td.task').evaluate(padding)
        top = page.locator('tr[data-task-id="start"] td.task').evaluate(padding)
        assert inner > top  # rows inside a group are indented
        shot(page, "grid-task-groups-open")
        page.locator('tr[data-group-id="extract"] a.group-toggle').click()
        expect(page.locator('tr[data-task-id="extract.a"]')).to_have_count(0)
        page.close()
    finally:
        assert stack.stop().get("webserver") == 0
