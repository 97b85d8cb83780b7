"""Keeps the database's view of the DAG folder current.

It parses every file (see :mod:`flowsched.discovery`), records import errors,
upserts ``dag`` rows, adds a ``dag_version`` whenever a file's fingerprint
changes, and marks DAGs whose files disappeared inactive. It runs as its own
process beside the scheduler so a slow file never delays scheduling.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import delete, func, select, update
from sqlalchemy.orm import Session

from flowsched.config import get_config
from flowsched.dataset_events import sync_dag_references
from flowsched.db.engine import db_outage, is_db_outage, session_scope
from flowsched.db.models import Dag, DagVersion, ImportError_
from flowsched.discovery import ParseResult, list_dag_files, parse_files
from flowsched.metrics.dag_processing import DagProcessingMetrics
from flowsched.scheduler.timetable import next_run_fields
from flowsched.serialization import SerializedDAG
from flowsched.timezone import utcnow

log = logging.getLogger(__name__)

# Seconds between looks for callback requests while waiting for the next pass.
CALLBACK_POLL = 1.0


@dataclass
class ProcessReport:
    files: int = 0
    dags: int = 0
    errors: list[str] = field(default_factory=list)
    new_versions: list[str] = field(default_factory=list)
    duration: float = 0.0
    # Seconds each file's import took, by path relative to the DAG folder (for metrics).
    file_durations: dict[str, float] = field(default_factory=dict)


def process_folder(folder: Path | None = None) -> ProcessReport:
    """Parse the DAG folder once and sync the DB.

    The folder is resolved at every pass, so a deployment that swaps a
    ``current`` symlink is picked up without a restart.
    """
    started = time.monotonic()
    conf = get_config()
    report = ProcessReport()
    root = Path(folder or conf.core.dags_folder).resolve()
    files = list_dag_files(root)
    listed = {str(path.relative_to(root)): index for index, path in enumerate(files)}
    # In listing order, not in the order the imports finished: of two files defining
    # the same DAG id, the first listed always wins.
    results = sorted(
        parse_files(
            root,
            files,
            conf.core.dagbag_import_timeout,
            conf.scheduler.parsing_processes,
            conf.core.dagbag_import_memory_limit,
        ),
        key=lambda result: listed[result.relative],
    )
    report.files = len(results)
    report.file_durations = {result.relative: result.duration for result in results}
    with session_scope() as session:
        _sync(session, results, report)
    report.duration = time.monotonic() - started
    return report


def _sync(session: Session, results: list[ParseResult], report: ProcessReport) -> None:
    now = utcnow()
    seen_dag_ids: dict[str, str] = {}
    failed_files = {result.relative for result in results if result.error}
    session.execute(delete(ImportError_))
    for result in results:
        if result.error:
            report.errors.append(result.error)
            session.add(
                ImportError_(filename=result.relative, traceback=result.error, created_at=now)
            )
            continue
        for data in result.dags:
            dag_id = data["dag_id"]
            if dag_id in seen_dag_ids:
                message = (
                    f"{result.relative}: DAG id '{dag_id}' is already defined in "
                    f"{seen_dag_ids[dag_id]}; this definition is ignored"
                )
                report.errors.append(message)
                session.add(
                    ImportError_(filename=result.relative, traceback=message, created_at=now)
                )
                continue
            seen_dag_ids[dag_id] = result.relative
            _upsert_dag(session, data, result, now, report)
    report.dags = len(seen_dag_ids)
    # DAGs whose file still fails keep their last good version active.
    stale = select(Dag.dag_id).where(Dag.is_active.is_(True))
    for (dag_id,) in session.execute(stale).all():
        if dag_id in seen_dag_ids:
            continue
        fileloc = session.scalar(select(Dag.fileloc).where(Dag.dag_id == dag_id))
        if fileloc in failed_files:
            continue
        session.execute(update(Dag).where(Dag.dag_id == dag_id).values(is_active=False))


def _warn_long_timeouts(dag: SerializedDAG) -> None:
    """With Celery, a try outliving the broker's visibility timeout gets its message
    redelivered; the duplicate is refused by the claim, but the setting is wrong."""
    conf = get_config()
    if conf.core.executor != "celery":
        return
    for spec in dag.tasks.values():
        timeout = spec.execution_timeout
        if timeout is not None and timeout.total_seconds() >= conf.celery.visibility_timeout:
            log.warning(
                "%s.%s: execution_timeout %s is not below [celery] visibility_timeout (%d s); "
                "raise visibility_timeout above the longest task",
                dag.dag_id,
                spec.task_id,
                timeout,
                conf.celery.visibility_timeout,
            )


def _upsert_dag(
    session: Session,
    data: dict[str, Any],
    result: ParseResult,
    now: datetime,
    report: ProcessReport,
) -> None:
    dag_id = data["dag_id"]
    dag = session.get(Dag, dag_id, with_for_update=True)
    serialized = SerializedDAG(data)
    _warn_long_timeouts(serialized)
    if dag is None:
        paused = data.get("is_paused_upon_creation")
        dag = Dag(
            dag_id=dag_id,
            is_paused=get_config().core.dags_are_paused_at_creation if paused is None else paused,
            tags=[],
            timezone=data["timezone"],
            fileloc=result.relative,
        )
        session.add(dag)
    latest = session.get(DagVersion, dag.latest_version_id) if dag.latest_version_id else None
    schedule_changed = latest is None or (
        latest.serialized.get("schedule") != data["schedule"]
        or latest.serialized.get("start_date") != data["start_date"]
        or latest.serialized.get("catchup") != data["catchup"]
    )
    plugins_changed = latest is not None and (
        latest.serialized.get("plugin_fingerprints", {}) != data.get("plugin_fingerprints", {})
    )
    if latest is None or latest.fingerprint != result.fingerprint or plugins_changed:
        number = (
            session.scalar(
                select(func.max(DagVersion.version_number)).where(DagVersion.dag_id == dag_id)
            )
            or 0
        ) + 1
        version = DagVersion(
            dag_id=dag_id,
            version_number=number,
            fingerprint=result.fingerprint,
            fileloc=result.relative,
            source=result.source or "",
            serialized=data,
            created_at=now,
        )
        session.add(version)
        session.flush()
        dag.latest_version_id = version.id
        report.new_versions.append(f"{dag_id} v{number}")
    dag.fileloc = result.relative
    dag.is_active = True
    dag.description = data.get("description")
    dag.schedule = data.get("schedule_description")
    dag.timezone = data["timezone"]
    dag.tags = data.get("tags") or []
    dag.max_active_runs = data["max_active_runs"]
    dag.last_parsed_at = now
    sync_dag_references(session, data, now)
    if schedule_changed:
        fields = next_run_fields(session, serialized, now)
        dag.next_data_interval_start = fields[0]
        dag.next_data_interval_end = fields[1]
        dag.next_run_create_after = fields[2]


class DagProcessor:
    """The loop of ``flowsched dag-processor``: parse every interval until stopped."""

    def __init__(self, interval: float | None = None, num_runs: int | None = None) -> None:
        self.interval = interval or get_config().scheduler.dag_dir_list_interval
        self.num_runs = num_runs
        self._stop = threading.Event()

    def stop(self, *_: object) -> None:
        self._stop.set()

    def run(self) -> None:
        signal.signal(signal.SIGTERM, self.stop)
        signal.signal(signal.SIGINT, self.stop)
        metrics = DagProcessingMetrics(get_config())
        metrics.start(get_config())
        try:
            self._loop(metrics)
        finally:
            metrics.stop()

    def _loop(self, metrics: DagProcessingMetrics) -> None:
        runs = 0
        outage = db_outage(log)
        while not self._stop.is_set():
            try:
                report = process_folder()
                outage.recovered()
                metrics.pass_done(report)
                log.info(
                    "parsed %d files, %d DAGs, %d errors in %.2fs%s",
                    report.files,
                    report.dags,
                    len(report.errors),
                    report.duration,
                    f"; new versions: {', '.join(report.new_versions)}"
                    if report.new_versions
                    else "",
                )
            except Exception as exc:
                if is_db_outage(exc):
                    # Logged once; the next pass comes sooner than an interval (backoff),
                    # and past [core] outage_tolerance OutageTooLong stops the processor.
                    self._stop.wait(min(outage.failed(exc), self.interval))
                    continue
                log.exception("DAG folder processing failed; retrying next interval")
            runs += 1
            if self.num_runs is not None and runs >= self.num_runs:
                break
            self._run_callbacks_until(time.monotonic() + self.interval)

    def _run_callbacks_until(self, until: float) -> None:
        """Between passes, this process is the callback runner (flowsched.callback_runner)."""
        from flowsched.callback_runner import run_pending_callbacks

        while not self._stop.is_set() and time.monotonic() < until:
            try:
                ran = run_pending_callbacks()
            except Exception as exc:
                if not is_db_outage(exc):
                    log.exception("running callback requests failed; retrying")
                ran = 0
            if not ran:
                self._stop.wait(min(CALLBACK_POLL, max(0.0, until - time.monotonic())))
