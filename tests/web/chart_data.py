"""Real runs for the chart tests: a DAG driven by the real scheduler and local executor.

``charted`` has three tasks; ``flaky`` fails its first try ever and succeeds
on the retry; ``last`` exits with the run conf's ``code``. Two runs: one
three days ago that fails (``last`` exits 1), one today that succeeds. So
the failed run has four tries (flaky twice), the good one three.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

from flowsched.operations import trigger_dag
from flowsched.timezone import default_timezone, utcnow
from tests.harness import drive, parse, run_finished, run_state

CHARTED = """
from datetime import datetime
from flowsched import DAG, BashOperator

with DAG("charted", schedule=None, start_date=datetime(2026, 1, 1), tags=["charts"]) as dag:
    first = BashOperator(task_id="first", bash_command="echo first")
    flaky = BashOperator(
        task_id="flaky", retries=1, retry_delay=0,
        bash_command="if [ -e {marker} ]; then echo fine; else touch {marker}; exit 3; fi",
    )
    last = BashOperator(task_id="last", bash_command="exit {{{{ dag_run.conf.get('code', 0) }}}}")
    first >> flaky >> last
"""

TRIES_BAD = {"first": 1, "flaky": 2, "last": 1}
TRIES_GOOD = {"first": 1, "flaky": 1, "last": 1}


@dataclass
class Charted:
    bad_run: str
    good_run: str
    bad_day: date
    good_day: date


def seed_charted(home: Any) -> Charted:
    home.write_dag("charted.py", CHARTED.format(marker=home.root / "flaky.marker"))
    parse()
    now = utcnow()
    # one after the other: the bad run's flaky must be the one that fails
    bad = trigger_dag(
        "charted", run_id="manual__bad", logical_date=now - timedelta(days=3), conf={"code": 1}
    )
    drive(run_finished("charted", bad.run_id), timeout=120)
    good = trigger_dag("charted", run_id="manual__good", logical_date=now, conf={"code": 0})
    drive(run_finished("charted", good.run_id), timeout=120)
    assert run_state("charted", bad.run_id) == "failed"
    assert run_state("charted", good.run_id) == "success"
    zone = default_timezone()
    return Charted(
        bad.run_id,
        good.run_id,
        (now - timedelta(days=3)).astimezone(zone).date(),
        now.astimezone(zone).date(),
    )
