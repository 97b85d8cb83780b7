"""Lab DAG: one task routed to each worker (queues `worker1` and `worker2`,
see inventories/lab/hosts.yml), then a task on the shared default queue.

The molecule verify triggers it and fetches each task's log from the worker
that ran it. Retries leave time for the stale-DAG check
(molecule/shared/verify/sync.yml): a worker refuses a stale DAG file, and the
task succeeds on a retry once sync-dags has run.
"""

from datetime import datetime, timedelta

from flowsched import DAG, BashOperator

with DAG(
    "lab_routed",
    schedule=None,
    start_date=datetime(2026, 1, 1),
    catchup=False,
    is_paused_upon_creation=False,
    tags=["lab"],
    description="A task on each worker, then one on any worker.",
    default_args={"retries": 8, "retry_delay": timedelta(seconds=15)},
) as dag:
    on_worker1 = BashOperator(
        task_id="on_worker1",
        queue="worker1",
        bash_command="echo ran on $FLOWSCHED_HOSTNAME",
    )
    on_worker2 = BashOperator(
        task_id="on_worker2",
        queue="worker2",
        bash_command="echo ran on $FLOWSCHED_HOSTNAME",
    )
    anywhere = BashOperator(task_id="anywhere", bash_command="echo done on $FLOWSCHED_HOSTNAME")

    [on_worker1, on_worker2] >> anywhere
