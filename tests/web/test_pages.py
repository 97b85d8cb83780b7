"""Every page, read as a viewer or acted on as an op or admin, on SQLite and MariaDB."""

from __future__ import annotations

import html
import re

from sqlalchemy import insert, select

from flowsched.dag_processor import process_folder
from flowsched.db.engine import session_scope
from flowsched.db.models import AuditLog, Dag, DagRun, TaskInstance
from flowsched.task_logs.files import log_path
from flowsched.timezone import utcnow
from tests.harness import drive, run_finished
from tests.web.conftest import post

# A rendered time without its offset would be a time people misread (the Airflow 1.x UTC trap).
BARE_TIME = re.compile(r"\d{4}-\d{2}-\d{2} \d{2}:\d{2}(?::\d{2})?(?![\d:])(?! [+-]\d{2}:\d{2})")


def _no_bare_times(text: str) -> None:
    visible = re.sub(r"<[^>]+>", " ", text)
    assert not BARE_TIME.findall(visible), BARE_TIME.findall(visible)[:3]


def _ti_states(run_id: str) -> dict[str, str]:
    with session_scope() as session:
        rows = session.execute(
            select(TaskInstance.task_id, TaskInstance.state).where(TaskInstance.run_id == run_id)
        ).all()
    return dict(rows)


def test_dags_page_lists_filters_and_labels_times(seeded):
    web, _ = seeded
    client = web.client("viewer")
    page = client.get("/dags")
    assert page.status_code == 200
    text = page.text
    assert 'data-dag-id="pipeline"' in text and 'data-dag-id="other_dag"' in text
    assert "<code>@daily</code>" in text
    assert "&lt;b&gt;report&lt;/b&gt;" in text  # the description is escaped, not rendered
    for state in ("success", "failed", "running"):
        assert re.search(rf'class="count s-{state}"[^>]*>1</a>', text), state
    assert "+08:00" in text
    _no_bare_times(text)
    assert "disabled" in text  # a viewer's pause switches cannot be used

    def ids(url: str) -> set[str]:
        return set(re.findall(r'data-dag-id="([^"]+)"', client.get(url).text))

    assert ids("/dags?q=pipe") == {"pipeline"}
    assert ids("/dags?q=e_i") == set()  # '_' is literal, not a LIKE wildcard
    assert ids("/dags?q=%25") == set()
    assert ids("/dags?tag=team-b") == {"other_dag"}
    assert ids("/dags?tag=team") == set()  # whole tags only
    assert ids("/dags?status=paused") == set()
    post(web.client("op"), "/dags/pipeline/pause", {"paused": "true"})
    assert ids("/dags?status=paused") == {"pipeline"}
    assert ids("/dags?status=active") == {"other_dag"}


def test_dags_page_paginates(sqlite_web):
    now = utcnow()
    with session_scope() as session:
        session.execute(
            insert(Dag),
            [
                {
                    "dag_id": f"dag_{n:03d}",
                    "fileloc": f"dag_{n:03d}.py",
                    "is_paused": False,
                    "is_active": True,
                    "timezone": "Etc/GMT-8",
                    "tags": [],
                    "max_active_runs": 1,
                    "last_parsed_at": now,
                }
                for n in range(120)
            ],
        )
    client = sqlite_web.client("viewer")
    first = client.get("/dags")
    assert first.text.count("data-dag-id=") == 50
    assert "Page 1 of 3" in first.text and "dag_000" in first.text
    last = client.get("/dags?page=3")
    assert last.text.count("data-dag-id=") == 20 and "dag_119" in last.text
    assert client.get("/dags?size=10&page=2").text.count("data-dag-id=") == 10
    assert client.get("/dags?page=99").text.count("data-dag-id=") == 0
    assert client.get("/dags?page=abc").status_code == 200  # garbage means the default


def test_import_errors_are_shown_with_file_and_traceback(sqlite_web, sqlite_home):
    sqlite_home.write_dag("broken.py", "import flowsched\nraise RuntimeError('boom at import')\n")
    process_folder()
    text = sqlite_web.client("viewer").get("/dags").text
    assert 'id="import-errors"' in text
    assert "1 DAG file failed to import" in text
    assert "broken.py" in text and "RuntimeError: boom at import" in text


def test_grid_colours_runs_by_tasks_and_pages_back(seeded):
    web, runs = seeded
    client = web.client("viewer")
    text = client.get("/dags/pipeline").text
    rows = re.findall(r'<td class="task" title="([^"]+)">', text)
    assert rows == ["extract", "load", "report"]  # topological order
    assert text.count('class="runbar') == 3
    bad = f"/dags/pipeline/runs/{runs['bad']}/tasks/"
    assert f'class="cell s-failed" href="{bad}load"' in text
    assert f'class="cell s-upstream_failed" href="{bad}report"' in text
    assert 'data-live="on"' in text  # a run is still running: the grid refreshes itself
    _no_bare_times(text)
    newest = client.get("/dags/pipeline?runs=2").text
    assert newest.count('class="runbar') == 2 and "Older runs" in newest
    older = re.search(r'href="(/dags/pipeline\?before=[^"]+)"', newest).group(1)
    text = client.get(html.unescape(older)).text
    assert re.findall(r'data-run-id="([^"]+)"', text) == [runs["ok"]]


def test_graph_draws_every_task_and_edge(seeded):
    web, runs = seeded
    client = web.client("viewer")
    text = client.get(f"/dags/pipeline/graph?run_id={runs['bad']}").text
    nodes = dict(re.findall(r'<g class="node s-([a-z_]+)" data-task-id="([^"]+)"', text))
    assert set(nodes.values()) == {"extract", "load", "report"}
    states = {
        task: state
        for state, task in re.findall(r'<g class="node s-([a-z_]+)" data-task-id="([^"]+)"', text)
    }
    assert states == {"extract": "success", "load": "failed", "report": "upstream_failed"}
    assert text.count('class="edge"') == 2
    assert client.get("/dags/pipeline/graph?run_id=nope").status_code == 404


def test_code_page_shows_fingerprint_and_version_history(sqlite_seeded, sqlite_home):
    web, _ = sqlite_seeded
    client = web.client("viewer")
    first = client.get("/dags/pipeline/code").text
    v1 = re.search(r"sha256 ([0-9a-f]{64})", first).group(1)
    assert "echo report" in first
    source = (sqlite_home.dags / "pipeline.py").read_text().replace("echo report", "echo v2")
    sqlite_home.write_dag("pipeline.py", source)
    process_folder()
    second = client.get("/dags/pipeline/code").text
    assert "echo v2" in second and "v2" in second
    assert re.search(r"sha256 ([0-9a-f]{64})", second).group(1) != v1
    old = client.get("/dags/pipeline/code?version=1").text
    assert "echo report" in old and "older version" in old and v1 in old
    assert client.get("/dags/pipeline/code?version=9").status_code == 404


def test_runs_and_run_page_show_conf_escaped(seeded):
    web, runs = seeded
    client = web.client("op")
    failed = client.get("/dags/pipeline/runs?state=failed").text
    assert runs["bad"] in failed and runs["ok"] not in failed
    page = client.get(f"/dags/pipeline/runs/{runs['bad']}")
    text = page.text
    assert '"name": "bad"' in html.unescape(text)
    assert "<script>alert(1)</script>" not in text and "&lt;script&gt;" in text
    assert "Clear failed tasks (with downstream)" in text
    assert "Content-Security-Policy" in page.headers
    _no_bare_times(text)


def test_task_page_shows_tries_and_the_log_of_each(home, web):
    home.write_dag(
        "logged.py",
        """
        from datetime import datetime
        from flowsched import DAG, BashOperator

        with DAG("logged", schedule=None, start_date=datetime(2026, 1, 1)) as dag:
            BashOperator(task_id="say", bash_command="echo hello-from-the-task")
        """,
    )
    process_folder()
    from flowsched.operations import trigger_dag

    run = trigger_dag("logged", run_id="manual__log")
    drive(run_finished("logged", run.run_id))
    client = web.client("viewer")
    text = client.get("/dags/logged/runs/manual__log/tasks/say").text
    assert 'id="tries"' in text and "try 1" in text
    assert "hello-from-the-task" in text, text[text.find('id="log"') :]
    assert "Log unavailable" not in text
    _no_bare_times(text)
    log_path("logged", "manual__log", "say", 1).unlink()
    missing = client.get("/dags/logged/runs/manual__log/tasks/say?try=1").text
    assert 'id="log-unavailable"' in missing and "attempt=1.log" in missing
    assert "has not run yet" in client.get("/dags/logged/runs/manual__log/tasks/say?try=7").text


def test_unknown_ids_are_404_pages_not_tracebacks(sqlite_seeded):
    web, runs = sqlite_seeded
    client = web.client("viewer")
    for url in [
        "/dags/nope",
        "/dags/nope/graph",
        "/dags/nope/runs",
        "/dags/pipeline/runs/nope",
        f"/dags/pipeline/runs/{runs['ok']}/tasks/nope",
        "/no/such/page",
    ]:
        response = client.get(url)
        assert response.status_code == 404, url
        assert "Traceback" not in response.text and "<h1>Not Found</h1>" in response.text
    assert "no DAG &#39;nope&#39;" in client.get("/dags/nope").text


def test_trigger_validates_conf_and_creates_the_run(seeded):
    web, _ = seeded
    client = web.client("op")
    bad = post(client, "/dags/pipeline/trigger", {"conf": '{"a": }'})
    assert bad.status_code == 400
    assert "conf is not valid JSON: Expecting value: line 1 column 7" in bad.text
    assert "{&#34;a&#34;: }" in bad.text  # what was typed is kept for fixing
    assert "must be a JSON object" in post(client, "/dags/pipeline/trigger", {"conf": "[1]"}).text
    bad_date = post(client, "/dags/pipeline/trigger", {"conf": "", "logical_date": "yesterday"})
    assert bad_date.status_code == 400 and "logical date" in bad_date.text
    dup = post(client, "/dags/pipeline/trigger", {"conf": "", "run_id": "manual__ok"})
    assert dup.status_code == 400 and "already has a run" in dup.text
    with session_scope() as session:
        assert len(session.scalars(select(DagRun.id)).all()) == 3
    good = post(
        client,
        "/dags/pipeline/trigger",
        {"conf": '{"day": "2026-11-24"}', "run_id": "web_run", "logical_date": "2026-11-24 08:00"},
    )
    assert good.status_code == 302 and good.location == "/dags/pipeline"
    with session_scope() as session:
        run = session.scalar(select(DagRun).where(DagRun.run_id == "web_run"))
        actor = session.scalar(select(AuditLog.actor).where(AuditLog.run_id == "web_run"))
    assert run.conf == {"day": "2026-11-24"}
    assert run.logical_date.isoformat() == "2026-11-24T00:00:00+00:00"  # 08:00 at +08:00
    assert actor == "web:op"
    assert "Triggered run web_run" in client.get("/dags/pipeline").text


def test_clear_failed_with_downstream_and_mark(seeded):
    web, runs = seeded
    op = web.client("op")
    response = post(
        op,
        "/dags/pipeline/clear",
        {"run_id": runs["bad"], "only_failed": "on", "downstream": "on", "next": "/dags/pipeline"},
    )
    assert response.status_code == 302 and response.location == "/dags/pipeline"
    assert _ti_states(runs["bad"]) == {"extract": "success", "load": "none", "report": "none"}
    assert "Cleared 2 task instance(s): load, report" in op.get("/dags/pipeline").text
    busy = post(op, "/dags/pipeline/clear", {"run_id": runs["live"], "task_id": "extract"})
    assert "still queued or running" in op.get(busy.location).text
    admin = web.client("admin")
    post(
        admin,
        "/dags/pipeline/mark",
        {"run_id": runs["ok"], "task_id": "report", "state": "failed"},
    )
    assert _ti_states(runs["ok"])["report"] == "failed"
    refused = post(
        admin, "/dags/pipeline/mark", {"run_id": runs["ok"], "task_id": "report", "state": "none"}
    )
    assert "can only be marked success or failed" in admin.get(refused.location).text
    with session_scope() as session:
        actors = set(session.scalars(select(AuditLog.actor)).all())
    assert {"web:op", "web:admin"} <= actors


def test_delete_needs_the_typed_id_and_uses_dags_delete(seeded):
    web, _ = seeded
    admin = web.client("admin")
    page = admin.get("/dags/pipeline/delete").text
    assert "3 runs" in page and "pipeline.py" in page
    wrong = post(admin, "/dags/pipeline/delete", {"confirm": "pipelin"})
    assert wrong.location == "/dags/pipeline/delete"
    running = post(admin, "/dags/pipeline/delete", {"confirm": "pipeline"})
    assert "queued or running run" in admin.get(running.location).text
    with session_scope() as session:
        assert session.get(Dag, "pipeline") is not None
    done = post(admin, "/dags/pipeline/delete", {"confirm": "pipeline", "force": "on"})
    assert done.location == "/dags"
    assert "Deleted DAG pipeline" in admin.get("/dags").text
    with session_scope() as session:
        assert session.get(Dag, "pipeline") is None
        assert session.scalars(select(DagRun).where(DagRun.dag_id == "pipeline")).all() == []
        event = session.scalar(select(AuditLog).where(AuditLog.event == "delete_dag"))
    assert event.actor == "web:admin" and event.extra["dag_run"] == 3


def test_workers_page_without_celery(sqlite_web):
    # With Celery the page is tested against live workers in test_e2e.py: Celery's
    # broker threads must not live in this process, which later forks DAG parsers.
    text = sqlite_web.client("viewer").get("/workers").text
    assert "Not using Celery" in text and "core.executor = local" in text


def test_big_dag_graph_is_laid_out_left_to_right_without_overlaps(sqlite_web, sqlite_home):
    # 200 tasks in 20 layers of 10; each task depends on two tasks of the layer before
    sqlite_home.write_dag(
        "big.py",
        """
        from datetime import datetime
        from flowsched import DAG, BashOperator

        with DAG("big", schedule=None, start_date=datetime(2026, 1, 1)) as dag:
            layers = [[BashOperator(task_id=f"step_{l:02d}_task_{n:02d}", bash_command="true")
                       for n in range(10)] for l in range(20)]
            for l in range(1, 20):
                for n, task in enumerate(layers[l]):
                    layers[l - 1][n] >> task
                    layers[l - 1][(n * 3 + 1) % 10] >> task
        """,
    )
    assert not process_folder().errors
    client = sqlite_web.client("viewer")
    text = client.get("/dags/big/graph").text
    boxes = [
        tuple(float(v) for v in m)
        for m in re.findall(
            r'<rect x="([\d.]+)" y="([\d.]+)" width="([\d.]+)" height="([\d.]+)" rx="5"/>', text
        )
    ]
    assert len(boxes) == 200
    for i, (x, y, w, h) in enumerate(boxes):
        for x2, y2, w2, h2 in boxes[i + 1 :]:
            assert x + w <= x2 or x2 + w2 <= x or y + h <= y2 or y2 + h2 <= y, "boxes overlap"
    paths = re.findall(r'<path class="edge" d="M([\d.]+),[\d.]+ C[^"]* ([\d.]+),[\d.]+"', text)
    assert len(paths) == 19 * 10 * 2  # two distinct upstreams per task after the first layer
    assert all(float(end) > float(start) for start, end in paths)
    assert 'aria-label="Task graph of big"' in text


def test_times_follow_the_configured_zone(sqlite_seeded, sqlite_home):
    web, runs = sqlite_seeded
    sqlite_home.configure(core={"default_timezone": "America/New_York"})
    text = web.client("viewer").get(f"/dags/pipeline/runs/{runs['ok']}").text
    assert "-05:00" in text and "+08:00" not in text
    assert "America/New_York" in text
