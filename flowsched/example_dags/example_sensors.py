"""Sensors, written as in Airflow: a reschedule-mode sensor waits for a file without
holding a worker slot, then a second DAG waits for this one's task and is triggered by it.

``example_sensors`` waits (mode="reschedule", state ``up_for_reschedule`` between
pokes) for ``/tmp/flowsched_example_<ts_nodash>``, which its own ``make_ready`` task creates,
processes it, and triggers ``example_sensors_downstream`` with a conf; that DAG's
ExternalTaskSensor waits for ``process`` in the run of the same logical date.
"""

from datetime import datetime, timedelta

from flowsched import (
    DAG,
    BashOperator,
    ExternalTaskSensor,
    FileSensor,
    PokeReturnValue,
    TriggerDagRunOperator,
    task,
)

READY = "/tmp/flowsched_example_{{ ts_nodash }}"  # one file per run

with DAG(
    "example_sensors",
    schedule="@daily",
    start_date=datetime(2026, 1, 1),
    catchup=False,
    tags=["example"],
    doc_md=__doc__,
) as dag:
    wait_for_file = FileSensor(
        task_id="wait_for_file",
        filepath=READY,
        mode="reschedule",  # between pokes: no process, no worker or pool slot
        poke_interval=2,
        timeout=timedelta(hours=1),
        exponential_backoff=True,
        max_wait=timedelta(minutes=1),
    )
    make_ready = BashOperator(task_id="make_ready", bash_command=f"sleep 1; touch {READY}")

    @task.sensor(poke_interval=2, timeout=60, mode="reschedule")
    def count_ready_files(ts_nodash=None) -> PokeReturnValue:
        from pathlib import Path

        found = Path(f"/tmp/flowsched_example_{ts_nodash}").exists()
        return PokeReturnValue(is_done=found, xcom_value=1 if found else None)

    process = BashOperator(task_id="process", bash_command="echo processing; rm -f " + READY)
    trigger = TriggerDagRunOperator(
        task_id="trigger_downstream",
        trigger_dag_id="example_sensors_downstream",
        trigger_run_id="from_{{ run_id }}",
        logical_date="{{ logical_date }}",
        conf={"source": "{{ dag.dag_id }}"},
    )
    [wait_for_file, count_ready_files()] >> process >> trigger

with DAG(
    "example_sensors_downstream",
    schedule=None,
    start_date=datetime(2026, 1, 1),
    tags=["example"],
) as downstream:
    ExternalTaskSensor(
        task_id="wait_for_process",
        external_dag_id="example_sensors",
        external_task_id="process",
        mode="reschedule",
        poke_interval=2,
        timeout=600,
    ) >> BashOperator(
        task_id="report", bash_command="echo triggered by {{ dag_run.conf.get('source') }}"
    )
