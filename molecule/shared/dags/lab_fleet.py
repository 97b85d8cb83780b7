"""Lab DAG: load spread over every worker (the default queue), for
bench/fleet_bench.py's rolling upgrade under load. Forty tasks sleep for the
run's conf `seconds` (default 60); no retries, so any try the upgrade
failed shows as a failed task.
"""

from datetime import datetime

from flowsched import DAG, BashOperator

with DAG(
    "lab_fleet",
    schedule=None,
    start_date=datetime(2026, 1, 1),
    catchup=False,
    tags=["lab"],
    description="Forty sleeping tasks on the default queue.",
    default_args={"retries": 0},
    max_active_tasks=64,  # the workers' slots limit the load, not Airflow's default of 16
) as dag:
    for i in range(40):
        BashOperator(task_id=f"t_{i}", bash_command="sleep {{ conf.get('seconds', 60) }}")
