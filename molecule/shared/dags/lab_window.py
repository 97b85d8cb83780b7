"""Lab DAG: more tasks on each worker than it has slots (worker concurrency 8),
so that some run and some wait in the queue while the sync-window verify
(molecule/shared/verify/sync-window.yml) ships a changed copy of this file.

Each task waits until the file named by the run's conf `flag` exists (the
verify creates it on the workers once the sync is done), at most conf
`seconds` (default 600), then fails. So the running tasks hold every slot
for as long as the sync takes, and the queued ones start after it, with
the fingerprint of the file as it was before. No retries: a refused try
would fail the run.
"""

from datetime import datetime

from flowsched import DAG, BashOperator

WAIT_FOR_FLAG = (
    "deadline=$((SECONDS + {{ conf.get('seconds', 600) }})); "
    "until [ -e '{{ conf.get('flag', '/nonexistent') }}' ]; do "
    "[ $SECONDS -lt $deadline ] || { echo 'no flag: giving up' >&2; exit 1; }; sleep 1; done"
)

with DAG(
    "lab_window",
    schedule=None,
    start_date=datetime(2026, 1, 1),
    catchup=False,
    tags=["lab"],
    description="Ten tasks on each worker, waiting for a flag file.",
    default_args={"retries": 0},
    # All twenty at once: Airflow's default of 16 would hold four back as
    # 'scheduled' instead of queued on the workers.
    max_active_tasks=32,
) as dag:
    for worker in (1, 2):
        for i in range(10):
            BashOperator(
                task_id=f"w{worker}_{i}", queue=f"worker{worker}", bash_command=WAIT_FOR_FLAG
            )
