"""Datasets: outlets record events, a DAG scheduled on datasets runs when all are updated."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from flowsched import DAG, BashOperator, Dataset, operations
from flowsched.datasets import Dataset as AirflowStyleDataset
from flowsched.db.engine import session_scope
from flowsched.db.models import (
    DagRun,
    DagScheduleDatasetReference,
    DatasetDagRunQueue,
    DatasetEvent,
    DatasetModel,
    TaskOutletDatasetReference,
)
from flowsched.exceptions import DagDefinitionError
from tests.harness import drive, parse, run_state

DATASETS = """
from datetime import datetime
from flowsched import DAG, BashOperator, EmptyOperator
from flowsched.datasets import Dataset

orders = Dataset("s3://lake/orders", extra={"team": "sales"})
stock = Dataset("s3://lake/stock")

with DAG("make_orders", start_date=datetime(2026, 1, 1)):
    BashOperator(task_id="write", bash_command="true", outlets=[orders])

with DAG("make_stock", start_date=datetime(2026, 1, 1)):
    EmptyOperator(task_id="write", outlets=[stock])

with DAG("report", schedule=[orders, stock], start_date=datetime(2026, 1, 1)):
    BashOperator(task_id="use", bash_command="echo {{ data_interval_end }}")
"""


def _dataset_runs() -> list[str]:
    with session_scope() as session:
        return list(
            session.scalars(
                select(DagRun.state).where(
                    DagRun.dag_id == "report", DagRun.run_type == "dataset_triggered"
                )
            )
        )


def test_a_dag_scheduled_on_datasets_runs_once_all_are_updated(home):
    home.write_dag("datasets.py", DATASETS)
    parse()
    with session_scope() as session:
        uris = dict(session.execute(select(DatasetModel.uri, DatasetModel.extra)).all())
        consumers = session.execute(select(DagScheduleDatasetReference.dag_id)).scalars().all()
        producers = session.execute(
            select(TaskOutletDatasetReference.dag_id, TaskOutletDatasetReference.task_id)
        ).all()
    assert uris == {"s3://lake/orders": {"team": "sales"}, "s3://lake/stock": {}}
    assert consumers == ["report", "report"]
    assert sorted(producers) == [("make_orders", "write"), ("make_stock", "write")]

    first = operations.trigger_dag("make_orders")
    scheduler = drive(lambda: run_state("make_orders", first.run_id) == "success")
    for _ in range(2):
        scheduler.run_once()
    assert _dataset_runs() == []  # one of two datasets updated: no run yet
    with session_scope() as session:
        [event] = session.scalars(select(DatasetEvent)).all()
        assert (event.source_dag_id, event.source_task_id) == ("make_orders", "write")
        assert event.source_run_id == first.run_id

    # The EmptyOperator with an outlet goes through a worker so its event is recorded.
    operations.trigger_dag("make_stock")
    drive(lambda: _dataset_runs() == ["success"], timeout=60)
    with session_scope() as session:
        assert session.scalars(select(DatasetDagRunQueue)).all() == []
        assert len(session.scalars(select(DatasetEvent)).all()) == 2

    # Updated again, only one of the two: no second run.
    again = operations.trigger_dag("make_orders")
    scheduler = drive(lambda: run_state("make_orders", again.run_id) == "success")
    for _ in range(2):
        scheduler.run_once()
    assert _dataset_runs() == ["success"]


def test_dataset_arguments_are_checked_and_importable_as_in_airflow():
    assert AirflowStyleDataset is Dataset
    assert Dataset("s3://x", extra={"a": 1}) == Dataset("s3://x")
    with pytest.raises(DagDefinitionError, match="ASCII characters without spaces"):
        Dataset("s3://bücket")
    with pytest.raises(DagDefinitionError, match="must hold only Datasets, got 'daily'"):
        DAG("mixed", schedule=[Dataset("s3://x"), "daily"])
    with DAG("consumer", schedule=[Dataset("s3://b"), Dataset("s3://a")]) as dag:
        BashOperator(task_id="t", bash_command="true", outlets=Dataset("s3://c"))
    data = dag.to_dict()
    assert data["schedule"] == {"type": "dataset", "uris": ["s3://a", "s3://b"]}
    assert data["schedule_description"] == "Dataset"
    assert data["tasks"][0]["outlets"] == [{"uri": "s3://c", "extra": {}}]
