"""Datasets and virtualenv tasks on the Celery executor: a worker's successful try
records the dataset event, the scheduler starts the consuming DAG's run."""

from __future__ import annotations

from sqlalchemy import select

from flowsched.db.engine import session_scope
from flowsched.db.models import DagRun, DagScheduleDatasetReference, DatasetEvent, XCom
from tests.conftest import wait_until
from tests.distributed.conftest import Cluster

CONSUMER = """
from flowsched import DAG, BashOperator, Dataset

with DAG("celery_consumer", schedule=[Dataset("file:///celery/out")]):
    BashOperator(task_id="use", bash_command="true")
"""


def test_worker_updates_a_dataset_and_the_consumer_runs(cluster: Cluster) -> None:
    (cluster.home.dags / "celery_consumer.py").write_text(CONSUMER)

    def consumer_known() -> bool:
        with session_scope() as session:
            return (
                session.scalar(
                    select(DagScheduleDatasetReference.dag_id).where(
                        DagScheduleDatasetReference.dag_id == "celery_consumer"
                    )
                )
                is not None
            )

    wait_until(consumer_known, timeout=60, step=0.2)
    cluster.write_dag(
        "celery_producer",
        """
@task.virtualenv(system_site_packages=False, outlets=[Dataset("file:///celery/out")])
def produce(n):
    import sys
    return {"n": n * 2, "isolated": sys.prefix != sys.base_prefix}

produce(21)
""",
        extra="from flowsched import Dataset, task",
    )
    run_id = cluster.trigger("celery_producer")
    assert cluster.wait_run("celery_producer", run_id, timeout=120) == "success"
    ti = cluster.tis("celery_producer", run_id)["produce"]
    assert ti.worker_nodename in (cluster.a.nodename, cluster.b.nodename)
    with session_scope() as session:
        value = session.scalar(
            select(XCom.value).where(XCom.run_id == run_id, XCom.task_id == "produce")
        )
        [event] = session.scalars(
            select(DatasetEvent).where(DatasetEvent.source_dag_id == "celery_producer")
        ).all()
    assert value == {"n": 42, "isolated": True}
    assert (event.source_run_id, event.source_try_number) == (run_id, 1)

    def consumer_ran() -> bool:
        with session_scope() as session:
            return (
                session.scalar(
                    select(DagRun.state).where(
                        DagRun.dag_id == "celery_consumer", DagRun.run_type == "dataset_triggered"
                    )
                )
                == "success"
            )

    wait_until(consumer_ran, timeout=90, step=0.2)
