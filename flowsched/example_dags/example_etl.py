"""Extract, transform, load with @task: values flow between tasks as XCom."""

from datetime import datetime, timedelta

from flowsched import DAG, BashOperator, task

with DAG(
    "example_etl",
    schedule="0 8 * * *",  # 08:00 on the cluster's clock (core.default_timezone)
    start_date=datetime(2026, 1, 1),
    catchup=False,
    tags=["example"],
    default_args={"retries": 2, "retry_delay": timedelta(seconds=10)},
    description="Extract numbers, sum them, report.",
) as dag:

    @task
    def extract():
        return {"numbers": [1, 2, 3, 4]}

    @task
    def transform(data):
        return sum(data["numbers"])

    report = BashOperator(
        task_id="report",
        bash_command="echo 'run {{ run_id }} on {{ ds }}: total {{ ti.xcom_pull(\"transform\") }}'",
    )

    transform(extract()) >> report
