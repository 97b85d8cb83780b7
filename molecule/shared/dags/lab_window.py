"""Lab DAG: more tasks on each worker than it has slots (worker concurrency 8),
so some run and some wait in the queue while the sync-window verify
(molecule/shared/verify/sync-window.yml) ships a changed copy of this file.
Tries queued before the sync run the kept release they were queued with: none
fails. No retries, so a refused try would fail the run.
"""

from datetime import datetime

from flowsched import DAG, BashOperator

with DAG(
    "lab_window",
    schedule=None,
    start_date=datetime(2026, 1, 1),
    catchup=False,
    tags=["lab"],
    description="Ten sleeping tasks on each worker.",
    default_args={"retries": 0},
) as dag:
    for worker in (1, 2):
        for i in range(10):
            BashOperator(
                task_id=f"w{worker}_{i}",
                queue=f"worker{worker}",
                bash_command="sleep {{ conf.get('seconds', 30) }}",
            )
