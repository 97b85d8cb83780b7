"""The DAG processor's metrics: how long each file takes to parse, and import errors.

The DAG processor is its own process (started by the scheduler, or on its own),
so it serves its own ``/metrics`` port: ``[metrics] dag_processor_port``.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from prometheus_client import Gauge

from flowsched.config import Config
from flowsched.metrics.exposition import MetricsServer, component_registry, serve_metrics
from flowsched.metrics.statsd import StatsdClient, safe_name, statsd_from_config

if TYPE_CHECKING:
    from flowsched.dag_processor import ProcessReport


class DagProcessingMetrics:
    def __init__(self, conf: Config) -> None:
        self.enabled = conf.metrics.prometheus_on or conf.metrics.statsd_on
        self.registry = component_registry()
        self.last_duration = Gauge(
            "flowsched_dag_processing_last_duration_seconds",
            "Seconds the last parse of each DAG file took (path relative to the DAG folder).",
            ("file",),
            registry=self.registry,
        )
        self.total_parse_time = Gauge(
            "flowsched_dag_processing_total_parse_time_seconds",
            "Seconds the last pass over the whole DAG folder took.",
            registry=self.registry,
        )
        self.import_errors = Gauge(
            "flowsched_dag_processing_import_errors",
            "DAG files (or DAG ids) that failed to import in the last pass.",
            registry=self.registry,
        )
        self.file_count = Gauge(
            "flowsched_dag_processing_file_count",
            "DAG files found in the last pass.",
            registry=self.registry,
        )
        self._server: MetricsServer | None = None
        self._statsd: StatsdClient | None = None

    def start(self, conf: Config) -> None:
        if self.enabled:
            self._statsd = statsd_from_config(conf)
            self._server = serve_metrics(self.registry, "dag_processor")

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()
            self._server = None
        if self._statsd is not None:
            self._statsd.close()
            self._statsd = None

    def pass_done(self, report: ProcessReport) -> None:
        if not self.enabled:
            return
        self.last_duration.clear()  # a file that was removed has no last duration any more
        for relative, seconds in report.file_durations.items():
            self.last_duration.labels(relative).set(seconds)
        self.total_parse_time.set(report.duration)
        self.import_errors.set(len(report.errors))
        self.file_count.set(report.listed)
        statsd = self._statsd
        if statsd is None:
            return
        for relative in report.imported:
            seconds = report.file_durations[relative]
            # Airflow names the file by its stem: dag_processing.last_duration.<file>
            statsd.timing(f"dag_processing.last_duration.{safe_name(Path(relative).stem)}", seconds)
        statsd.gauge("dag_processing.total_parse_time", report.duration)
        statsd.gauge("dag_processing.import_errors", len(report.errors))
