"""A task run as a container through the Docker Engine API (see docs/docker.md).

Nothing connects to Docker until the task runs, so this file parses on hosts
without Docker; it never runs on its own (schedule=None): trigger it by hand on
a worker that can reach a Docker endpoint.
"""

from datetime import datetime, timedelta

from flowsched import DAG, BashOperator
from flowsched.providers.docker import DockerOperator

with DAG(
    "example_docker",
    schedule=None,
    start_date=datetime(2026, 1, 1),
    tags=["example", "docker"],
    default_args={"retries": 1, "retry_delay": timedelta(seconds=30)},
    description="Checksum a generated file inside a busybox container.",
) as dag:
    checksum = DockerOperator(
        task_id="checksum",
        image="busybox:1.36",
        # A list runs as is; a string is split like a shell would, without a shell.
        command=["sh", "-c", 'echo "partition $PARTITION" > /tmp/p && echo checksum $(cat /tmp/p)'],
        environment={"PARTITION": "{{ ds }}"},
        network_mode="none",  # this task needs no network
        cpus=0.5,
        mem_limit="128m",
        execution_timeout=timedelta(minutes=5),  # the container is stopped and removed then
    )
    done = BashOperator(task_id="done", bash_command="echo '{{ ti.xcom_pull(\"checksum\") }}'")
    checksum >> done
