"""Fan-out, fan-in and trigger rules: cleanup runs whatever happened upstream."""

from datetime import datetime

from flowsched import DAG, BashOperator, PythonOperator


def check(ds, **_):
    print(f"checking partition {ds}")
    return ds


with DAG(
    "example_branches",
    schedule="@hourly",
    start_date=datetime(2026, 1, 1),
    tags=["example"],
) as dag:
    start = BashOperator(task_id="start", bash_command="echo start")
    shards = [
        BashOperator(task_id=f"shard_{n}", bash_command=f"echo shard {n}; sleep 1")
        for n in range(3)
    ]
    verify = PythonOperator(task_id="verify", python_callable=check)
    cleanup = BashOperator(task_id="cleanup", bash_command="echo cleanup", trigger_rule="all_done")
    start >> shards >> verify >> cleanup
