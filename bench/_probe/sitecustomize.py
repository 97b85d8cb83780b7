"""Installs the round-trip probe (bench/roundtrips.py) in benchmark worker programs.

Only on ``PYTHONPATH`` when a benchmark starts a worker; does nothing without
the variable naming the counts file.
"""

import os
import sys

if os.environ.get("FLOWSCHED_BENCH_ROUNDTRIPS"):
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(__file__))))
    from bench import roundtrips

    roundtrips.install(os.environ["FLOWSCHED_BENCH_ROUNDTRIPS"])
