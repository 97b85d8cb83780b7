"""What metrics cost the scheduler: a fan-out with metrics off, then on.

On SQLite, in this process (LocalExecutor), runs the core benchmark's fan-out
of N no-op tasks twice: with metrics off (the baseline), then with Prometheus
and StatsD on (a UDP socket of this process receives) and the cluster figures
read every second. Prints tasks/s of both, and the time of one read of the
cluster figures (first, and steady) with the fan-out's tries in the history.
Figures are printed, never asserted.

    .venv/bin/python bench/metrics_bench.py [--fan 500] [--parallelism 4]
"""

from __future__ import annotations

import argparse
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.core_bench import FAN, configure, run_dag
from flowsched.config import load_config, set_config
from flowsched.dag_processor import process_folder
from flowsched.db.engine import reset_engine, session_scope
from flowsched.executors.local import LocalExecutor
from flowsched.metrics.cluster import ClusterReader


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def fan(dag_id: str, n: int, parallelism: int) -> float:
    edges = [("root", f"t{i:04d}") for i in range(n)]
    result = run_dag(dag_id, edges, LocalExecutor(parallelism))
    assert result["state"] == "success", result
    return result["tasks_per_s"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--fan", type=int, default=500)
    parser.add_argument("--parallelism", type=int, default=4)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, socket.socket(type=socket.SOCK_DGRAM) as udp:
        udp.bind(("127.0.0.1", 0))
        root = Path(tmp)
        dags = configure(root, f"sqlite:///{root / 'bench.db'}", args.parallelism)
        for dag_id in ("fan_off", "fan_on"):
            source = FAN.format(n=args.fan).replace('"fan"', repr(dag_id))
            (dags / f"{dag_id}.py").write_text(source)
        process_folder()
        off = fan("fan_off", args.fan, args.parallelism)

        cfg = root / "flowsched.cfg"
        cfg.write_text(
            cfg.read_text()
            + "\n[metrics]\nprometheus_on = true\nprometheus_host = 127.0.0.1\n"
            + f"scheduler_port = {free_port()}\ncollect_interval = 1\nstatsd_on = true\n"
            + f"statsd_host = 127.0.0.1\nstatsd_port = {udp.getsockname()[1]}\n"
        )
        set_config(load_config(cfg))
        on = fan("fan_on", args.fan, args.parallelism)
        print(
            f"fan-out of {args.fan} (SQLite, parallelism {args.parallelism}): "
            f"metrics off {off:.1f} tasks/s (baseline), on {on:.1f} tasks/s "
            f"({on / off:.2f} x baseline)"
        )

        reader = ClusterReader()
        times = []
        for _ in range(20):
            started = time.perf_counter()
            with session_scope(read_only=True) as session:
                reader.read(session)
            times.append((time.perf_counter() - started) * 1000)
        print(
            f"one read of the cluster figures with {2 * (args.fan + 1)} tries in the history: "
            f"first {times[0]:.1f} ms, then median {statistics.median(times[1:]):.1f} ms"
        )
        reset_engine()


if __name__ == "__main__":
    main()
