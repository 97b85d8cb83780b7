"""Lab DAG: tasks that keep the workers busy for a while (the length of a
task is the run's conf `seconds`, default 60). Used by the verify steps that
stop a busy worker and roll an upgrade while tasks run.
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
        BashOperator(
            task_id=f"sleep_{i}",
            bash_command="sleep {{ conf.get('seconds', 60) }}",
        )
