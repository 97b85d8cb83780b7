"""A Celery worker's metrics: its slots, busy and open, and the tries it has handled.

Read at scrape time from Celery's own bookkeeping in the worker's main process
(``celery.worker.state``), so a try costs nothing extra: no counter is written
from the pool processes, and no multiprocess files are needed.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from flowsched.metrics.exposition import MetricsServer, component_registry, serve_metrics


class WorkerCollector:
    """Collects from ``celery.worker.state`` when scraped."""

    def __init__(self, nodename: str, concurrency: int) -> None:
        self.nodename = nodename
        self.concurrency = concurrency

    def collect(self) -> Iterator[Metric]:
        from celery.worker import state

        busy = len(state.active_requests)
        # Received (prefetched) but not yet given to a pool process.
        waiting = max(len(state.reserved_requests) - busy, 0)
        slots = GaugeMetricFamily(
            "flowsched_worker_slots",
            "Pool slots of the worker: busy (running a try) and open.",
            labels=["worker", "state"],
        )
        slots.add_metric([self.nodename, "busy"], busy)
        slots.add_metric([self.nodename, "open"], max(self.concurrency - busy, 0))
        yield slots
        prefetched = GaugeMetricFamily(
            "flowsched_worker_prefetched_tasks",
            "Messages the worker took from the broker that wait for a free slot.",
            labels=["worker"],
        )
        prefetched.add_metric([self.nodename], waiting)
        yield prefetched
        started = CounterMetricFamily(
            "flowsched_worker_tasks_started",
            "Messages (tries) the worker has given to its pool since it started.",
            labels=["worker"],
        )
        started.add_metric([self.nodename], sum(state.total_count.values()))
        yield started


def serve_worker_metrics(nodename: str, concurrency: int) -> MetricsServer | None:
    """Start the worker's /metrics (``[metrics] worker_port``) if Prometheus is on."""
    registry = component_registry()
    registry.register(WorkerCollector(nodename, concurrency))
    return serve_metrics(registry, "worker")
