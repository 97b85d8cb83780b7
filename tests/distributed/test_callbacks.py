"""Callbacks on a Celery cluster: a task's on the worker, in the try's process; a run's,
and a killed try's (its worker could only report the crash), in the callback runner
inside the DAG processor; none in the scheduler."""

from __future__ import annotations

import json
import textwrap

from tests.conftest import wait_until
from tests.distributed.conftest import Cluster

RECORD = textwrap.dedent("""
    import json, os

    def record(name):
        def callback(context):
            with open(os.path.join(OUT, f"{name}.json"), "w") as out:
                json.dump({
                    "task_id": context["ti"].task_id if context["ti"] else None,
                    "hostname": os.environ.get("FLOWSCHED_HOSTNAME"),
                    "pid": os.getpid(),
                    "parent": open(f"/proc/{os.getppid()}/cmdline").read().split("\\0"),
                    "reason": context.get("reason"),
                    "exception": repr(context.get("exception")),
                }, out)
        return callback

    def die():
        os.kill(os.getpid(), 9)
""")


def test_callbacks_run_on_the_worker_and_in_the_callback_runner_never_the_scheduler(
    cluster: Cluster,
) -> None:
    out = cluster.root / f"callbacks-{cluster.log_port}"
    out.mkdir()
    path = cluster.write_dag(
        "celery_callbacks",
        textwrap.dedent("""
        PythonOperator(task_id='fine', python_callable=lambda: 1,
                       on_success_callback=record('task_success'))
        PythonOperator(task_id='killed', python_callable=die,
                       on_failure_callback=record('task_failure'))
        """),
        extra=f"OUT = {str(out)!r}\n{RECORD}",
    )
    # The DAG's own run callback, added to the DAG(...) call the helper wrote.
    source = path.read_text().replace(
        "with DAG('celery_callbacks',",
        "with DAG('celery_callbacks', on_failure_callback=record('dag_failure'),",
    )
    path.write_text(source)
    run_id = cluster.trigger("celery_callbacks")
    assert cluster.wait_run("celery_callbacks", run_id) == "failed", cluster.report()
    names = ("task_success", "task_failure", "dag_failure")
    wait_until(lambda: all((out / f"{n}.json").exists() for n in names), timeout=60, step=0.3)
    seen = {name: json.loads((out / f"{name}.json").read_text()) for name in names}
    scheduler = next(proc for proc in cluster.procs if proc.name == "scheduler")

    # On a worker (its FLOWSCHED_HOSTNAME), in the try's process, forked by its pool.
    assert seen["task_success"]["hostname"] in {cluster.a.hostname, cluster.b.hostname}
    assert seen["task_success"]["task_id"] == "fine"
    # The killed try's failure and the run's failure: in the DAG processor's children.
    for name in ("task_failure", "dag_failure"):
        assert seen[name]["hostname"] is None, seen[name]
        assert "dag-processor" in seen[name]["parent"], seen[name]
        assert seen[name]["pid"] != scheduler.process.pid
    assert seen["task_failure"]["task_id"] == "killed"
    assert "killed by SIGKILL" in seen["task_failure"]["exception"]
    assert seen["dag_failure"]["reason"] == "task_failure"
