"""Lab DAG: tasks that keep both workers busy until the roll drains them.
Used by the rolling-upgrade verify (molecule/shared/verify/upgrade.yml).

hold_0 and hold_1 run on worker1 (queue `worker1`), hold_2 and hold_3 on
worker2. Each runs until no live worker consumes its queue any more (the
roll's drain cancelled the consumer), then `linger` seconds more (conf,
default 25), so that the drain's first check finds it running and a later
one finds it done. A fixed sleep could not promise that: how long the roll
takes to reach a worker depends on the machine. After conf `seconds`
(default 1500) a task gives up and succeeds, so the verify's own check
(the drain waited for a running task) fails rather than hangs.
"""

import time
from datetime import datetime

from flowsched import DAG, PythonOperator
from flowsched.celery.inspect import list_workers


def hold_until_drained(queue, linger="25", seconds="1500"):
    linger, seconds = float(linger), float(seconds)  # templated: they arrive as text
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            workers = list_workers(timeout=2.0)
        except Exception as error:  # the broker is not down in this verify; say so and go on
            print(f"cannot list the workers: {error}")
            workers = None
        if workers is not None and not any(queue in worker["queues"] for worker in workers):
            print(f"no worker consumes {queue!r} any more: finishing in {linger} s")
            time.sleep(linger)
            return
        time.sleep(3)
    print(f"{queue!r} was still consumed after {seconds} s: giving up")


with DAG(
    "lab_drain",
    schedule=None,
    start_date=datetime(2026, 1, 1),
    catchup=False,
    tags=["lab"],
    description="Tasks on both workers that run until their worker is drained.",
    default_args={"retries": 0},
) as dag:
    for i in range(4):
        queue = "worker1" if i < 2 else "worker2"
        PythonOperator(
            task_id=f"hold_{i}",
            queue=queue,
            python_callable=hold_until_drained,
            op_kwargs={
                "queue": queue,
                "linger": "{{ conf.get('linger', 25) }}",
                "seconds": "{{ conf.get('seconds', 1500) }}",
            },
        )
