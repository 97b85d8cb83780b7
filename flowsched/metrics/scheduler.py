"""The scheduler's metrics: its own loop, and the cluster-wide figures it reads.

Prometheus names are ``flowsched_*``; the StatsD names are Airflow's (see
docs/monitoring.md for the table). Everything is off unless ``[metrics]
prometheus_on`` or ``statsd_on``, and nothing here can stop the scheduler: a
failed read of the figures is logged and tried again next interval.
"""

from __future__ import annotations

import logging
import time

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from flowsched.config import Config
from flowsched.db.engine import is_db_outage, session_scope
from flowsched.metrics.cluster import ClusterReader, Snapshot, leading_scheduler
from flowsched.metrics.exposition import MetricsServer, component_registry, serve_metrics
from flowsched.metrics.statsd import StatsdClient, statsd_from_config

log = logging.getLogger(__name__)

# Seconds: from a one-second task to a six-hour batch job.
TASK_DURATION_BUCKETS = (1, 5, 10, 30, 60, 120, 300, 600, 1800, 3600, 7200, 21600)


class SchedulerMetrics:
    """Metrics of one scheduler process; every method is cheap when metrics are off."""

    def __init__(self, conf: Config) -> None:
        self.enabled = conf.metrics.prometheus_on or conf.metrics.statsd_on
        self.interval = conf.metrics.collect_interval
        self.registry = component_registry()
        self._statsd: StatsdClient | None = None
        self._server: MetricsServer | None = None
        self._reader = ClusterReader()
        self._last_collect = 0.0
        self._queues = {conf.celery.default_queue}
        self._alive = conf.scheduler.zombie_threshold
        self._define(self.registry)

    def _define(self, registry: CollectorRegistry) -> None:
        def counter(name: str, doc: str, labels: tuple[str, ...] = ()) -> Counter:
            return Counter(name, doc, labels, registry=registry)

        def gauge(name: str, doc: str, labels: tuple[str, ...] = ()) -> Gauge:
            return Gauge(name, doc, labels, registry=registry)

        self.loop_duration = Histogram(
            "flowsched_scheduler_loop_duration_seconds",
            "Duration of one scheduler loop pass.",
            registry=registry,
        )
        self.heartbeats = counter("flowsched_scheduler_heartbeat", "Scheduler loop passes.")
        self.zombies = counter(
            "flowsched_zombies_killed", "Running tries found silent past zombie_threshold."
        )
        self.queued_timeouts = counter(
            "flowsched_task_queued_timeouts", "Tries queued past task_queued_timeout."
        )
        self.open_slots = gauge(
            "flowsched_executor_open_slots", "Tries this scheduler's executor can still take."
        )
        self.tis = gauge(
            "flowsched_task_instances",
            "Task instances not yet finished, by state (cluster-wide).",
            ("state",),
        )
        self.queue_depth = gauge(
            "flowsched_queue_depth", "Tries queued and not yet started, by queue.", ("queue",)
        )
        self.pool_slots = gauge(
            "flowsched_pool_slots",
            "Slots of each pool: total, open, queued (taken by queued tries), running.",
            ("pool", "state"),
        )
        self.ti_start = counter(
            "flowsched_ti_start", "Tries started, by DAG and task.", ("dag_id", "task_id")
        )
        self.ti_finish = counter(
            "flowsched_ti_finish",
            "Tries finished, by DAG, task and how the try ended (success, failed, skipped).",
            ("dag_id", "task_id", "state"),
        )
        self.task_duration = Histogram(
            "flowsched_task_duration_seconds",
            "Duration of finished tries that ran, by DAG and task.",
            ("dag_id", "task_id"),
            buckets=TASK_DURATION_BUCKETS,
            registry=registry,
        )
        self.dagrun_start = counter("flowsched_dagrun_start", "Runs started, by DAG.", ("dag_id",))
        self.dagrun_finish = counter(
            "flowsched_dagrun_finish", "Runs finished, by DAG and state.", ("dag_id", "state")
        )
        self.dagrun_duration = Histogram(
            "flowsched_dagrun_duration_seconds",
            "Duration of finished runs, by DAG and state.",
            ("dag_id", "state"),
            buckets=TASK_DURATION_BUCKETS,
            registry=registry,
        )

    # -- process lifetime ---------------------------------------------------
    def start(self, conf: Config) -> None:
        if not self.enabled:
            return
        self._statsd = statsd_from_config(conf)
        self._server = serve_metrics(self.registry, "scheduler")

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()
            self._server = None
        if self._statsd is not None:
            self._statsd.close()
            self._statsd = None

    # -- the loop's hooks ---------------------------------------------------
    def pass_done(self, seconds: float, open_slots: int) -> None:
        """One pass of the loop took ``seconds``; the executor has ``open_slots`` left."""
        if not self.enabled:
            return
        self.loop_duration.observe(seconds)
        self.heartbeats.inc()
        self.open_slots.set(open_slots)
        if self._statsd:
            self._statsd.timing("scheduler.scheduler_loop_duration", seconds)
            self._statsd.incr("scheduler_heartbeat")
            self._statsd.gauge("executor.open_slots", open_slots)

    def swept(self, zombies: int = 0, queued_timeouts: int = 0) -> None:
        if not self.enabled:
            return
        self.zombies.inc(zombies)
        self.queued_timeouts.inc(queued_timeouts)
        if self._statsd and zombies:
            self._statsd.incr("zombies_killed", zombies)

    def collect_if_due(self, job_id: int | None) -> None:
        """Read the cluster's figures if ``collect_interval`` has passed and this
        scheduler (job ``job_id``) is the one that publishes them; never raises."""
        if not self.enabled or time.monotonic() - self._last_collect < self.interval:
            return
        self._last_collect = time.monotonic()
        try:
            with session_scope(read_only=True) as session:
                leads = job_id is not None and leading_scheduler(session, self._alive) == job_id
                snapshot = self._reader.read(session) if leads else None
        except Exception as exc:
            if not is_db_outage(exc):
                log.exception("metrics: reading the cluster's figures failed")
            return
        if snapshot is not None:
            self.publish(snapshot)
        elif self._reader.primed:
            self._step_down()

    def _step_down(self) -> None:
        """Another scheduler publishes now: drop the gauges (their sum over schedulers
        must stay right) and start afresh should this one lead again. Counters stay."""
        for gauge in (self.tis, self.queue_depth, self.pool_slots):
            gauge.clear()
        self._reader = ClusterReader()

    # -- publishing ---------------------------------------------------------
    def publish(self, snapshot: Snapshot) -> None:
        statsd = self._statsd
        for state, count in snapshot.tis_by_state.items():
            self.tis.labels(state).set(count)
        # A queue once seen (and the default queue) reads 0 when empty, not its last depth.
        self._queues.update(snapshot.queued_by_queue)
        for queue in self._queues:
            self.queue_depth.labels(queue).set(snapshot.queued_by_queue.get(queue, 0))
        for pool, slots in snapshot.pools.items():
            for state, value in slots.items():
                self.pool_slots.labels(pool, state).set(value)
                if statsd and state != "total":
                    statsd.gauge(f"pool.{state}_slots.{pool}", value)
        for dag_id, task_id in snapshot.tries_started:
            self.ti_start.labels(dag_id, task_id).inc()
            if statsd:
                statsd.incr(f"ti.start.{dag_id}.{task_id}")
        for ended in snapshot.tries_ended:
            self.ti_finish.labels(ended.dag_id, ended.task_id, ended.state).inc()
            if ended.duration is not None:
                self.task_duration.labels(ended.dag_id, ended.task_id).observe(ended.duration)
            if statsd:
                statsd.incr(f"ti.finish.{ended.dag_id}.{ended.task_id}.{ended.state}")
                if ended.state in ("success", "failed"):
                    statsd.incr("ti_successes" if ended.state == "success" else "ti_failures")
                if ended.duration is not None:
                    statsd.timing(f"dag.{ended.dag_id}.{ended.task_id}.duration", ended.duration)
        for dag_id in snapshot.runs_started:
            self.dagrun_start.labels(dag_id).inc()
        for run in snapshot.runs_ended:
            self.dagrun_finish.labels(run.dag_id, run.state).inc()
            if run.duration is not None:
                self.dagrun_duration.labels(run.dag_id, run.state).observe(run.duration)
                if statsd:
                    statsd.timing(f"dagrun.duration.{run.state}.{run.dag_id}", run.duration)
        if statsd:
            statsd.gauge("executor.queued_tasks", snapshot.tis_by_state.get("queued", 0))
            statsd.gauge("executor.running_tasks", snapshot.tis_by_state.get("running", 0))
