"""Lab DAG of the chaos drill (scripts/chaos-drill, docs/lab.md).

Each task is one process that writes a ledger of its own life: a `start`
line, a `beat` every second and an `end` line when its work is done, one
JSON line per event (task, run, try, host, pid, the try's process ppid,
time), appended to a file in the worker's log folder. The drill injects
faults while runs of this DAG go on, collects the ledgers of every worker
and checks from them that no two executions of a task instance overlapped
and that every finished execution was recorded once.

The ledger is a file on the worker, not a table of the metadata database,
so that it keeps recording while the database is down (one of the faults).
Workers share the machine's clock in the lab, so times compare across hosts.

Run conf: `ledger` (file path, required), `seconds` (work time, default 20).
Tasks w1_* go to worker1's queue, w2_* to worker2's, so both are loaded.

The same file is the task's program: BashOperator runs it with the system
Python (`python3 lab_chaos.py ledger ...`, standard library only), `exec`ed
so that its parent is the try's own process, which the drill can kill.
"""

import json
import os
import shlex
import socket
import sys
import time


def _append(path: str, event: dict) -> None:
    """One line per event, appended in a single write (O_APPEND: lines from
    concurrent tasks never interleave)."""
    line = (json.dumps(event, sort_keys=True) + "\n").encode()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
    try:
        os.write(fd, line)
    finally:
        os.close(fd)


def ledger_main(argv: list) -> int:
    """`lab_chaos.py ledger PATH SECONDS`: do SECONDS of "work", recording it."""
    path, seconds = argv[0], float(argv[1])
    os.makedirs(os.path.dirname(path), exist_ok=True)
    base = {
        "dag": os.environ.get("FLOWSCHED_DAG_ID", "?"),
        "task": os.environ.get("FLOWSCHED_TASK_ID", "?"),
        "run": os.environ.get("FLOWSCHED_RUN_ID", "?"),
        "try": int(os.environ.get("FLOWSCHED_TRY_NUMBER", "0")),
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "ppid": os.getppid(),
    }
    _append(path, {**base, "event": "start", "t": time.time()})
    done = time.monotonic() + seconds
    while True:
        left = done - time.monotonic()
        if left <= 0:
            break
        time.sleep(min(1.0, left))
        _append(path, {**base, "event": "beat", "t": time.time()})
    _append(path, {**base, "event": "end", "t": time.time()})
    print(f"worked {seconds:g}s")
    return 0


if __name__ == "__main__" and sys.argv[1:2] == ["ledger"]:
    sys.exit(ledger_main(sys.argv[2:]))

if __name__ != "__main__":
    from datetime import datetime, timedelta

    from flowsched import DAG, BashOperator

    _PROGRAM = f"exec /usr/bin/python3 {shlex.quote(os.path.abspath(__file__))} ledger"

    with DAG(
        "lab_chaos",
        schedule=None,
        start_date=datetime(2026, 1, 1),
        catchup=False,
        is_paused_upon_creation=False,
        tags=["lab"],
        description="Load of the chaos drill: tasks that keep a ledger of their executions.",
        max_active_runs=64,
        max_active_tasks=256,  # the slots limit the load, not Airflow's default of 16
        default_args={"retries": 2, "retry_delay": timedelta(seconds=5)},
    ) as dag:
        for worker in (1, 2):
            for i in range(2):
                BashOperator(
                    task_id=f"w{worker}_{i}",
                    queue=f"worker{worker}",
                    bash_command=(_PROGRAM + " {{ conf['ledger'] }} {{ conf.get('seconds', 20) }}"),
                )
