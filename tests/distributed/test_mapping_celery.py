"""Dynamic task mapping on the Celery executor and MariaDB: each copy is its own
message and try on a real worker, retried on its own, reduced in map_index order."""

from __future__ import annotations

from sqlalchemy import select

from flowsched.db.engine import session_scope
from flowsched.db.models import TaskInstance, XCom
from flowsched.task_logs.client import fetch_task_log_tail
from tests.distributed.conftest import Cluster


def test_mapped_task_runs_per_copy_on_celery_workers(cluster: Cluster) -> None:
    marker = cluster.home.root / "celery-map-marker"
    marker.unlink(missing_ok=True)
    cluster.write_dag(
        "celery_map",
        """
@task
def items():
    return list(range(6))

@task(retries=1, retry_delay=0)
def square(x):
    if x == 4 and not MARKER.exists():
        MARKER.write_text("failed once")
        raise RuntimeError("copy 4 fails its first try")
    print(f"squaring {x}")
    return x * x

@task
def total(values):
    return list(values)

total(square.expand(x=items()))
""",
        extra=(
            f"from pathlib import Path\nfrom flowsched import task\nMARKER = Path({str(marker)!r})"
        ),
    )
    run_id = cluster.trigger("celery_map")
    assert cluster.wait_run("celery_map", run_id, timeout=180) == "success"
    with session_scope() as session:
        copies = session.scalars(
            select(TaskInstance)
            .where(TaskInstance.run_id == run_id, TaskInstance.task_id == "square")
            .order_by(TaskInstance.map_index)
        ).all()
        found = [(ti.map_index, ti.state, ti.try_number) for ti in copies]
        nodes = {ti.worker_nodename for ti in copies}
        hosts = {ti.map_index: ti.hostname for ti in copies}
        reduced = session.scalar(
            select(XCom.value).where(
                XCom.run_id == run_id, XCom.task_id == "total", XCom.key == "return_value"
            )
        )
    assert found == [(i, "success", 2 if i == 4 else 1) for i in range(6)]
    assert nodes <= {cluster.a.nodename, cluster.b.nodename}
    assert reduced == [0, 1, 4, 9, 16, 25]
    # Each copy logs under its own map_index folder, served by its worker's log server.
    tail = fetch_task_log_tail(hosts[3], "celery_map", run_id, "square", 1, 65536, 3)
    assert "squaring 3" in tail.text()
    retried = cluster.tries("celery_map", run_id, "square")
    assert sum(1 for t in retried if t.map_index == 4) == 2
