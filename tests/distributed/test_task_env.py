"""Task code never sees the cluster's secrets, though the worker has them in its environment.

Production workers get their secrets from systemd's EnvironmentFile as
``FLOWSCHED__*`` variables; a task that prints its environment writes to a
log every Viewer reads. The worker here is started the same way, and a
BashOperator (the whole environment goes to its shell) and a PythonOperator
(the try process's own environment) print what they see.
"""

from __future__ import annotations

import textwrap

from flowsched.task_logs.client import fetch_task_log_tail
from tests.distributed.conftest import SECRET, Cluster


def test_tasks_get_no_flowsched_secrets_from_the_worker_environment(cluster: Cluster) -> None:
    secrets = {
        "FLOWSCHED__CORE__SECRET_KEY": SECRET,
        "FLOWSCHED__DATABASE__SQL_ALCHEMY_CONN": cluster.home.url,
        "FLOWSCHED__CELERY__BROKER_URL": cluster.redis.url,
        "FLOWSCHED__FLOWER__BASIC_AUTH": "admin:flower-test-password-0c2e4a6f",
    }
    worker = cluster.start_worker(
        "envcheck", queues="envcheck", env={**secrets, "TASK_VISIBLE_MARKER": "kept-for-tasks"}
    )
    try:
        cluster.write_dag(
            "env_dump",
            textwrap.dedent("""
            BashOperator(task_id='bash_env', queue='envcheck',
                         bash_command='env | sort; echo end-of-env')
            PythonOperator(task_id='python_env', queue='envcheck',
                           python_callable=lambda: print(sorted(os.environ.items())))
            """),
            extra="import os",
        )
        run_id = cluster.trigger("env_dump")
        assert cluster.wait_run("env_dump", run_id) == "success", cluster.report()
        for task_id, end in (("bash_env", "end-of-env"), ("python_env", "kept-for-tasks")):
            log = fetch_task_log_tail(
                worker.hostname, "env_dump", run_id, task_id, 1, 1 << 20
            ).text()
            assert end in log, log[-2000:]
            assert "TASK_VISIBLE_MARKER" in log  # the environment was printed, minus secrets
            assert "FLOWSCHED__LOGGING__BASE_LOG_FOLDER" in log  # not a secret: kept
            for name, value in secrets.items():
                assert name not in log, f"{task_id} saw {name}"
                assert value not in log, f"{task_id} saw the value of {name}"
        assert worker.alive()  # the worker itself kept its settings and works on
    finally:
        worker.terminate()
