"""Task groups: tasks in named, nested boxes, linked group to group.

Tasks inside ``with TaskGroup("extract"):`` get ids like ``extract.orders``; the
graph shows each group as one box until it is opened, the grid as one row.
"""

from datetime import datetime, timedelta

from flowsched import DAG, BashOperator, EmptyOperator, TaskGroup, task, task_group

with DAG(
    "example_task_groups",
    schedule=None,
    start_date=datetime(2026, 1, 1),
    tags=["example"],
    description="Extract two sources, transform each, publish.",
) as dag:
    start = EmptyOperator(task_id="start")

    with TaskGroup("extract", tooltip="Pull every source", default_args={"retries": 2}) as extract:
        for source in ("orders", "customers"):
            BashOperator(task_id=source, bash_command=f"echo extracting {source}")

    @task_group(tooltip="Clean then aggregate", default_args={"retry_delay": timedelta(seconds=5)})
    def transform():
        @task
        def clean():
            return [3, 1, 2]

        @task
        def aggregate(values):
            return sum(values)

        total = aggregate(clean())
        with TaskGroup("checks") as checks:
            EmptyOperator(task_id="row_count")
        total >> checks
        # Nothing returned: `>>` on the call links the group's first and last tasks.

    publish = BashOperator(task_id="publish", bash_command="echo publishing")

    start >> extract >> transform() >> publish
