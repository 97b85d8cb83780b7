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


def test_trigger_dag_run_and_external_task_sensor_on_celery_workers(cluster: Cluster) -> None:
    """A worker triggers another DAG's run and waits for it; another worker's
    ExternalTaskSensor (reschedule mode) sees that run's task succeed."""
    cluster.write_dag(
        "celery_target",
        'BashOperator(task_id="work", bash_command="test \'{{ dag_run.conf.n }}\' = 3")',
    )
    cluster.write_dag(
        "celery_controller",
        """
TriggerDagRunOperator(task_id="trigger", trigger_dag_id="celery_target",
                      trigger_run_id="from_{{ run_id }}", conf={"n": 3},
                      logical_date="{{ logical_date }}", wait_for_completion=True,
                      poke_interval=0.5)
ExternalTaskSensor(task_id="watch", external_dag_id="celery_target", external_task_id="work",
                   mode="reschedule", poke_interval=0.5, timeout=120)
""",
        extra="from flowsched import ExternalTaskSensor, TriggerDagRunOperator",
    )
    cluster.trigger("celery_target")  # parsed and known before the controller needs it
    run_id = cluster.trigger("celery_controller")
    assert cluster.wait_run("celery_controller", run_id, timeout=150) == "success"
    target = cluster.tis("celery_target", f"from_{run_id}")
    assert target["work"].state == "success"
    assert target["work"].worker_nodename in (cluster.a.nodename, cluster.b.nodename)
    watch = cluster.tis("celery_controller", run_id)["watch"]
    assert (watch.state, watch.try_number) == ("success", 1)
