"""Sensors in reschedule mode on the Celery executor: between pokes they hold no worker slot."""

from __future__ import annotations

from sqlalchemy import func, select

from flowsched.db.engine import session_scope
from flowsched.db.models import TaskReschedule
from tests.distributed.conftest import Cluster


def test_reschedule_sensors_free_the_workers_slots(cluster: Cluster, tmp_path) -> None:
    """Six sensors, four worker slots (two workers, concurrency 2): they wait for a file
    only the seventh task makes. Sensors that held their slot (mode="poke") never let it
    run; in mode="reschedule" it runs between pokes and every sensor then succeeds."""
    flag = tmp_path / "flag"
    cluster.write_dag(
        "celery_sensors",
        f"""
for i in range(6):
    FileSensor(task_id=f"wait_{{i}}", filepath={str(flag)!r}, mode="reschedule",
               poke_interval=0.5, timeout=120, priority_weight=10)
BashOperator(task_id="maker", bash_command="touch {flag}")
""",
        extra="from flowsched import FileSensor",
    )
    run_id = cluster.trigger("celery_sensors")
    assert cluster.wait_run("celery_sensors", run_id, timeout=150) == "success"
    tis = cluster.tis("celery_sensors", run_id)
    assert {ti.state for ti in tis.values()} == {"success"}
    # Each sensor finished in its first try: a reschedule spends no retry.
    assert {ti.try_number for ti in tis.values()} == {1}
    nodes = {tis[f"wait_{i}"].worker_nodename for i in range(6)}
    assert nodes <= {cluster.a.nodename, cluster.b.nodename}
    with session_scope(read_only=True) as session:
        pokes = session.scalar(
            select(func.count())
            .select_from(TaskReschedule)
            .where(TaskReschedule.dag_id == "celery_sensors", TaskReschedule.run_id == run_id)
        )
    assert pokes >= 4  # at least the sensors that held the four slots first gave them back
