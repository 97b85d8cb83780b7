"""Messages a worker must not run: each is dropped with a log line, the worker keeps going."""

from __future__ import annotations

import pickle

from kombu import Exchange

from flowsched.celery.app import TASK_NAME, make_app
from tests.conftest import wait_until
from tests.distributed.conftest import Cluster

QUEUE = "default"


def _workload(**overrides: object) -> dict[str, object]:
    body: dict[str, object] = {
        "ti_id": 999_999,
        "dag_id": "no_such_dag",
        "task_id": "no_such_task",
        "run_id": "manual__nowhere",
        "try_number": 1,
        "fingerprint": "0" * 64,
        "fileloc": "no_such_dag.py",
        "queue": QUEUE,
    }
    body.update(overrides)
    return body


def test_bad_messages_are_dropped_with_a_reason_and_workers_keep_running(cluster: Cluster) -> None:
    # A real task instance, for a message that names it with other ids.
    cluster.write_dag("victim", "BashOperator(task_id='real', bash_command='echo real-ran')")
    run_id = cluster.trigger("victim")
    assert cluster.wait_run("victim", run_id) == "success"
    real = cluster.tis("victim", run_id)["real"]

    app = make_app()
    app.send_task(TASK_NAME, args=[{"dag_id": "half"}], queue=QUEUE)
    app.send_task(TASK_NAME, args=["not a workload"], queue=QUEUE)
    app.send_task(TASK_NAME, args=[_workload()], queue=QUEUE)
    app.send_task(
        TASK_NAME,
        args=[_workload(ti_id=real.id, dag_id="victim", task_id="other", run_id=run_id)],
        queue=QUEUE,
    )
    # A duplicate delivery of a try that already ran.
    app.send_task(
        TASK_NAME,
        args=[_workload(ti_id=real.id, dag_id="victim", task_id="real", run_id=run_id)],
        queue=QUEUE,
    )
    app.send_task("flowsched.no_such_task", args=[], queue=QUEUE)
    with app.producer_or_acquire() as producer:
        exchange = Exchange(QUEUE, type="direct")
        headers = {"task": TASK_NAME, "id": "pickled-message", "lang": "py"}
        # Pickle is refused before anything is unpickled: nothing runs as root by accident.
        producer.publish(
            pickle.dumps(((_workload(),), {}, {})),
            exchange=exchange,
            routing_key=QUEUE,
            content_type="application/x-python-serialize",
            content_encoding="binary",
            headers=headers,
        )
        producer.publish(
            b"{this is not json",
            exchange=exchange,
            routing_key=QUEUE,
            content_type="application/json",
            content_encoding="utf-8",
            headers={**headers, "id": "garbled-message"},
        )

    expected = [
        "dropping malformed message {'dag_id': 'half'}: workload is missing",
        "dropping malformed message: expected a JSON object, got 'not a workload'",
        "not running: unknown task instance 999999",
        f"not running: message names victim.other run={run_id} try=1 but task instance {real.id}",
        f"not running: stale message for victim.real run={run_id} try=1: the task is now success",
        "Received unregistered task of type 'flowsched.no_such_task'",
        "untrusted content of type pickle",
        "Can't decode message body: DecodeError",
        "'id': 'garbled-message'",
    ]

    def all_logged() -> bool:
        text = cluster.a.text() + cluster.b.text()
        return all(line in text for line in expected)

    try:
        wait_until(all_logged, timeout=30)
    except AssertionError:
        text = cluster.a.text() + cluster.b.text()
        missing = [line for line in expected if line not in text]
        raise AssertionError(f"not logged: {missing}\n{cluster.report()}") from None

    assert cluster.tis("victim", run_id)["real"].try_number == 1  # never re-run
    assert cluster.a.alive() and cluster.b.alive()
    cluster.write_dag("after_bad", "BashOperator(task_id='ok', bash_command='echo still-fine')")
    after = cluster.trigger("after_bad")
    assert cluster.wait_run("after_bad", after) == "success"
