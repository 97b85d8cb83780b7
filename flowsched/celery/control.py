"""A remote inspect command that answers "who are you" in one round trip.

Celery's built-in commands give the nodename, queues and active tasks in
three broadcasts; ``flowsched_info`` adds what only flowsched knows (the
hostname recorded on task instances, i.e. where logs are fetched from, and
the flowsched version) and returns it all at once. Registered on import,
which :func:`flowsched.celery.app.make_app` does.
"""

from __future__ import annotations

from typing import Any

from celery.worker import state as worker_state
from celery.worker.control import inspect_command

from flowsched import __version__
from flowsched.config import get_config
from flowsched.hostname import get_hostname


def describe_request(request: Any) -> str:
    """``dag.task run=… try=…`` for a running request, from its workload argument."""
    args = request.args or [None]
    body = args[0] if isinstance(args, list | tuple) and args else None
    if isinstance(body, dict):
        return (
            f"{body.get('dag_id')}.{body.get('task_id')} run={body.get('run_id')} "
            f"try={body.get('try_number')}"
        )
    return str(request.id)


@inspect_command()
def flowsched_info(state: Any, **_: Any) -> dict[str, Any]:
    """Nodename's hostname, version, queues and running tries."""
    consumer = state.consumer
    task_consumer = getattr(consumer, "task_consumer", None)
    queues = sorted(queue.name for queue in task_consumer.queues) if task_consumer else []
    active = [describe_request(request) for request in list(worker_state.active_requests)]
    return {
        "hostname": get_hostname(),
        "version": __version__,
        "queues": queues,
        "active": active,
        "concurrency": getattr(consumer.pool, "num_processes", None),
        "log_server_port": get_config().worker.log_server_port,
    }
