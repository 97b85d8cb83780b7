"""Lab DAG: tasks that keep both workers busy for a while. Used by the verify
step that stops a busy worker (molecule/shared/verify/stop.yml); the rolling
upgrade's load is lab_drain, which lasts until each worker is drained.

sleep_0 and sleep_1 run on worker1 (queue `worker1`) for the run's conf
`seconds` (default 60); sleep_2 and sleep_3 on worker2 for a minute longer.
"""

from datetime import datetime

from flowsched import DAG, BashOperator

with DAG(
    "lab_long",
    schedule=None,
    start_date=datetime(2026, 1, 1),
    catchup=False,
    tags=["lab"],
    description="Sleeping tasks on both workers.",
) as dag:
    for i in range(4):
        extra = 0 if i < 2 else 60
        BashOperator(
            task_id=f"sleep_{i}",
            queue="worker1" if i < 2 else "worker2",
            bash_command=f"sleep {{{{ conf.get('seconds', 60) + {extra} }}}}",
        )
