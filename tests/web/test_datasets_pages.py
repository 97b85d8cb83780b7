"""The datasets page and /api/v1/datasets: producers, consumers, last update."""

from __future__ import annotations

from flowsched.dag_processor import process_folder
from flowsched.dataset_events import record_outlet_events
from flowsched.db.engine import session_scope
from flowsched.timezone import utcnow
from tests.web.openapi_check import check

DAGS = """
from datetime import datetime
from flowsched import DAG, BashOperator, Dataset

raw = Dataset("s3://lake/raw", extra={"format": "parquet"})

with DAG("producer", start_date=datetime(2026, 1, 1)):
    BashOperator(task_id="load", bash_command="true", outlets=[raw])

with DAG("consumer", schedule=[raw]):
    BashOperator(task_id="use", bash_command="true")
"""


def test_datasets_api_and_page(home, web):
    home.write_dag("lake.py", DAGS)
    assert not process_folder().errors
    client = web.client()
    empty = check(client.get("/api/v1/datasets", headers=web.api("viewer")))
    [dataset] = empty["datasets"]
    assert dataset["last_update"] is None and dataset["event_count"] == 0
    with session_scope() as session:
        # As a successful try of producer.load records it (lifecycle.finish_try).
        assert record_outlet_events(session, "producer", "load", "manual__x", 1, utcnow()) == 1
    listing = check(client.get("/api/v1/datasets", headers=web.api("viewer")))
    [dataset] = listing["datasets"]
    assert dataset["uri"] == "s3://lake/raw"
    assert dataset["extra"] == {"format": "parquet"}
    assert dataset["producing_tasks"] == [{"dag_id": "producer", "task_id": "load"}]
    assert dataset["consuming_dags"] == [{"dag_id": "consumer"}]
    assert dataset["last_update"] is not None and dataset["event_count"] == 1
    page = web.client("viewer").get("/datasets")
    assert page.status_code == 200
    assert "s3://lake/raw" in page.text and "producer</a>.load" in page.text
    assert "manual__x" in page.text
    assert client.get("/api/v1/datasets").status_code == 401
