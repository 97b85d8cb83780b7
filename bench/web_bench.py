"""Webserver render times with 1,000 DAGs and 100,000 task instances, on SQLite and MariaDB.

Loads the data (1,000 five-task DAGs with 15 runs each, plus one 200-task DAG
with 125 runs: 100,000 task instances and as many tries), then requests each
main page through Flask's test client (app, queries and templates; no network)
and prints the median and p95 render time and the number of SQL statements
per page: a count that grows with the page's rows would be an N+1.
Figures are printed, never asserted.

    .venv/bin/python bench/web_bench.py [--backend sqlite|mysql|both] [--requests 30]
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import tempfile
import textwrap
import time
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sqlalchemy import event, insert, select

from flowsched.config import load_config, set_config
from flowsched.dag_processor import process_folder
from flowsched.db import migrate
from flowsched.db.engine import get_engine, reset_engine, session_scope
from flowsched.db.models import Dag, DagRun, DagVersion, TaskInstance, TaskTry
from flowsched.timezone import utcnow
from flowsched.web.app import create_app
from flowsched.web.users import create_token, create_user

SMALL_DAGS = 1000
SMALL_RUNS = 15
BIG_TASKS = 200
BIG_RUNS = 125
BATCH = 5000

SMALL = """
from datetime import datetime
from flowsched import DAG, BashOperator
with DAG("template_small", schedule="@daily", start_date=datetime(2026, 1, 1),
         tags=["bench", "team-{team}"]) as dag:
    tasks = [BashOperator(task_id=f"step_{{n}}", bash_command="true") for n in range(5)]
    for up, down in zip(tasks, tasks[1:]):
        up >> down
"""

BIG = """
from datetime import datetime
from flowsched import DAG, BashOperator
with DAG("big", schedule="@hourly", start_date=datetime(2026, 1, 1)) as dag:
    layers = [[BashOperator(task_id=f"task_{{l:02d}}_{{n:02d}}", bash_command="true")
               for n in range(10)] for l in range({layers})]
    for l in range(1, len(layers)):
        for n, task in enumerate(layers[l]):
            layers[l - 1][n] >> task
            layers[l - 1][(n * 3 + 1) % 10] >> task
"""


def configure(root: Path, url: str) -> None:
    dags = root / "dags"
    dags.mkdir(parents=True, exist_ok=True)
    (dags / "template_small.py").write_text(textwrap.dedent(SMALL.format(team="a")))
    (dags / "big.py").write_text(textwrap.dedent(BIG.format(layers=BIG_TASKS // 10)))
    cfg = root / "flowsched.cfg"
    cfg.write_text(
        f"[core]\ndags_folder = {dags}\n[database]\nsql_alchemy_conn = {url}\n"
        f"[logging]\nbase_log_folder = {root / 'logs'}\nlevel = WARNING\n"
    )
    set_config(load_config(cfg))
    reset_engine()
    migrate.upgrade()
    report = process_folder()
    assert not report.errors, report.errors


def _insert(table: Any, rows: list[dict[str, Any]]) -> None:
    for start in range(0, len(rows), BATCH):
        with session_scope() as session:
            session.execute(insert(table), rows[start : start + BATCH])


def load_data(small_dags: int, big_runs: int) -> dict[str, str]:
    """Clone the parsed template into ``small_dags`` DAGs and give every DAG its runs, TIs
    and tries (``big_runs`` for the big DAG)."""
    now = utcnow()
    with session_scope() as session:
        template = session.get(Dag, "template_small")
        version = session.get(DagVersion, template.latest_version_id)
        base_dag = {c.name: getattr(template, c.name) for c in Dag.__table__.columns}
        base_version = {c.name: getattr(version, c.name) for c in DagVersion.__table__.columns}
        big_version_id = session.get(Dag, "big").latest_version_id
    dags, versions = [], []
    for n in range(small_dags):
        dag_id = f"dag_{n:04d}"
        serialized = copy.deepcopy(base_version["serialized"])
        serialized["dag_id"] = dag_id
        versions.append({**base_version, "id": None, "dag_id": dag_id, "serialized": serialized})
        dags.append({**base_dag, "dag_id": dag_id, "tags": ["bench", f"team-{n % 10}"]})
    _insert(DagVersion, [{k: v for k, v in row.items() if k != "id"} for row in versions])
    with session_scope() as session:
        ids = dict(
            session.execute(
                select(DagVersion.dag_id, DagVersion.id).where(DagVersion.dag_id.like("dag_%"))
            ).all()
        )
    for row in dags:
        row["latest_version_id"] = ids[row["dag_id"]]
    _insert(Dag, dags)

    plans = [(f"dag_{n:04d}", ids[f"dag_{n:04d}"], SMALL_RUNS, 5) for n in range(small_dags)]
    plans.append(("big", big_version_id, big_runs, BIG_TASKS))
    states = ["success"] * 8 + ["failed", "running"]
    runs = []
    for dag_id, version_id, count, _ in plans:
        for r in range(count):
            start = now - timedelta(hours=count - r)
            runs.append(
                {
                    "dag_id": dag_id,
                    "run_id": f"scheduled__{start.isoformat()}",
                    "run_type": "scheduled",
                    "state": states[r % len(states)],
                    "logical_date": start,
                    "data_interval_start": start,
                    "data_interval_end": start + timedelta(hours=1),
                    "conf": {},
                    "dag_version_id": version_id,
                    "created_at": start,
                    "start_date": start,
                    "end_date": start + timedelta(minutes=5),
                }
            )
    _insert(DagRun, runs)
    with session_scope() as session:
        run_rows = session.execute(select(DagRun.id, DagRun.dag_id, DagRun.run_id)).all()
    tasks_of = {dag_id: n for dag_id, _, _, n in plans}
    with session_scope() as session:
        big_tasks = list(
            session.get(DagVersion, big_version_id).serialized["tasks"][i]["task_id"]
            for i in range(BIG_TASKS)
        )
    tis = []
    for run_pk, dag_id, run_id in run_rows:
        names = big_tasks if dag_id == "big" else [f"step_{n}" for n in range(tasks_of[dag_id])]
        for task_id in names:
            tis.append(
                {
                    "dag_run_id": run_pk,
                    "dag_id": dag_id,
                    "run_id": run_id,
                    "task_id": task_id,
                    "state": "success",
                    "try_number": 1,
                    "max_tries": 0,
                    "operator": "BashOperator",
                    "pool": "default_pool",
                    "priority_weight": 1,
                    "hostname": "10.0.0.7",
                    "worker_nodename": "w1@10.0.0.7",
                    "duration": 1.5,
                    "end_date": now - timedelta(seconds=78.5),
                }
            )
    _insert(TaskInstance, tis)
    with session_scope() as session:
        ti_rows = session.execute(
            select(TaskInstance.id, TaskInstance.dag_id, TaskInstance.run_id, TaskInstance.task_id)
        ).all()
    tries = [
        {
            "task_instance_id": pk,
            "dag_id": dag_id,
            "run_id": run_id,
            "task_id": task_id,
            "try_number": 1,
            "state": "success",
            # no host: the task page's log fetch fails at once instead of timing out
            "hostname": None,
            "worker_nodename": "w1@10.0.0.7",
            # times for the Gantt and task duration charts
            "queued_at": now - timedelta(seconds=90),
            "start_date": now - timedelta(seconds=80),
            "end_date": now - timedelta(seconds=78.5),
            "duration": 1.5,
        }
        for pk, dag_id, run_id, task_id in ti_rows
    ]
    _insert(TaskTry, tries)
    big_run = max((r for r in runs if r["dag_id"] == "big"), key=lambda r: r["logical_date"])
    return {"big_run": big_run["run_id"], "tis": str(len(tis)), "task": big_tasks[100]}


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def measure(
    backend: str, url: str, requests: int, small_dags: int, big_runs: int
) -> list[tuple[str, float, float, int]]:
    with tempfile.TemporaryDirectory() as tmp:
        configure(Path(tmp), url)
        started = time.monotonic()
        info = load_data(small_dags, big_runs)
        print(
            f"[{backend}] loaded {small_dags + 1} DAGs, {info['tis']} task instances "
            f"in {time.monotonic() - started:.1f}s",
            flush=True,
        )
        create_user("bench", "bench-password", "viewer")
        api_headers = {"Authorization": f"Bearer {create_token('bench')}"}
        app = create_app(secret_key="bench")
        client = app.test_client()
        client.get("/login")
        with client.session_transaction() as session:
            token = session["_csrf"]
        client.post(
            "/login", data={"username": "bench", "password": "bench-password", "csrf_token": token}
        )
        statements = [0]
        event.listen(
            get_engine(),
            "before_cursor_execute",
            lambda *args: statements.__setitem__(0, statements[0] + 1),
        )
        run = info["big_run"]
        pages = {
            "DAGs page 1": "/dags",
            "DAGs page 10": "/dags?page=10",
            "DAGs search": "/dags?q=dag_05",
            "DAGs tag filter": "/dags?tag=team-3",
            "grid, 5 tasks": f"/dags/dag_{small_dags // 2:04d}",
            "grid, 200 tasks x 25 runs": "/dags/big",
            "graph, 200 tasks": "/dags/big/graph",
            "runs list": "/dags/big/runs",
            "run, 200 tasks": f"/dags/big/runs/{run}",
            "task instance": f"/dags/big/runs/{run}/tasks/{info['task']}",
            "gantt, 200 tasks": f"/dags/big/gantt?run_id={quote(run)}",
            "task duration, 200 tasks x 25 runs": "/dags/big/duration",
            "landing times, 200 tasks x 25 runs": "/dags/big/landing_times",
            "calendar, 1 year": "/dags/big/calendar?days=366",
            "cluster activity": "/cluster_activity",
            "API /dags": "/api/v1/dags",
            "API taskDurations, 200 tasks x 25 runs": "/api/v1/dags/big/taskDurations",
        }
        results = []
        for name, path in pages.items():
            headers = api_headers if path.startswith("/api/") else {}
            response = client.get(path, headers=headers)
            assert response.status_code == 200, (path, response)
            timings = []
            for _ in range(requests):
                statements[0] = 0
                begin = time.perf_counter()
                response = client.get(path, headers=headers)
                timings.append((time.perf_counter() - begin) * 1000)
            count = statements[0]
            results.append((name, statistics.median(timings), percentile(timings, 0.95), count))
        reset_engine()
        set_config(None)
        return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", choices=["sqlite", "mysql", "both"], default="both")
    parser.add_argument("--requests", type=int, default=30)
    parser.add_argument("--dags", type=int, default=SMALL_DAGS, help="five-task DAGs to load")
    parser.add_argument("--big-runs", type=int, default=BIG_RUNS, help="runs of the 200-task DAG")
    args = parser.parse_args()
    results: dict[str, list[tuple[str, float, float, int]]] = {}
    if args.backend in ("sqlite", "both"):
        with tempfile.TemporaryDirectory() as tmp:
            results["sqlite"] = measure(
                "sqlite", f"sqlite:///{tmp}/bench.db", args.requests, args.dags, args.big_runs
            )
    if args.backend in ("mysql", "both"):
        from tests.servers import start_mariadb

        with tempfile.TemporaryDirectory() as tmp:
            server = start_mariadb(Path(tmp) / "mariadb")
            try:
                url = server.create_database(f"bench_{uuid.uuid4().hex[:8]}")
                results["mysql"] = measure("mysql", url, args.requests, args.dags, args.big_runs)
            finally:
                server.stop()
    for backend, rows in results.items():
        print(f"\n{backend}: render time per page ({args.requests} requests each)")
        print(f"  {'page':<28} {'median ms':>10} {'p95 ms':>8} {'SQL stmts':>10}")
        for name, median, p95, count in rows:
            print(f"  {name:<28} {median:>10.1f} {p95:>8.1f} {count:>10}")


if __name__ == "__main__":
    main()
