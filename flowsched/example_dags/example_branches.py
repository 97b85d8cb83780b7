"""Branching, short-circuiting and trigger rules, written as in Airflow.

Each run takes one of two paths by the hour of its logical date (even: "full", odd:
"incremental"); the other path is skipped. A short-circuit skips publishing when
there is nothing new, and the cleanup runs whatever happened upstream.
"""

from datetime import datetime

from flowsched import (
    DAG,
    BashOperator,
    EmptyOperator,
    Label,
    ShortCircuitOperator,
    task,
)

with DAG(
    "example_branches",
    schedule="@hourly",
    start_date=datetime(2026, 1, 1),
    catchup=False,
    tags=["example"],
    doc_md=__doc__,
) as dag:
    start = EmptyOperator(task_id="start")

    @task.branch
    def choose_load(logical_date=None):
        """Return the task id to follow; the other direct downstream task is skipped."""
        return "full_load" if logical_date.hour % 2 == 0 else "incremental_load"

    full = BashOperator(task_id="full_load", bash_command="echo full load for {{ ds }}")
    incremental = BashOperator(
        task_id="incremental_load", bash_command="echo rows since {{ data_interval_start }}"
    )
    # none_failed_min_one_success: runs after whichever branch ran (the other is skipped).
    join = EmptyOperator(task_id="join", trigger_rule="none_failed_min_one_success")

    has_news = ShortCircuitOperator(
        task_id="has_news",
        python_callable=lambda ds: not ds.endswith("-01"),  # nothing new on the 1st
    )
    publish = BashOperator(task_id="publish", bash_command="echo publishing {{ run_id }}")
    cleanup = BashOperator(task_id="cleanup", bash_command="echo cleanup", trigger_rule="all_done")

    branch = choose_load()
    start >> branch
    branch >> Label("even hour") >> full >> join
    branch >> Label("odd hour") >> incremental >> join
    join >> has_news >> Label("something new") >> publish >> cleanup
