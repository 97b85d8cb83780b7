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
from flowsched.db.models import Dag, DagRun, DagVersion, ImportError_
from flowsched.discovery import ParseResult, list_dag_files, parse_files
from flowsched.metrics.dag_processing import DagProcessingMetrics
from flowsched.scheduler.timetable import next_run_fields
from flowsched.serialization import SerializedDAG
from flowsched.state import RunType
from flowsched.timezone import utcnow

log = logging.getLogger(__name__)

# Seconds between looks for callback requests while waiting for the next pass.
CALLBACK_POLL = 1.0


@dataclass
class ProcessReport:
    files: int = 0  # imported in this pass
    listed: int = 0  # in the folder
    dags: int = 0
    errors: list[str] = field(default_factory=list)
    new_versions: list[str] = field(default_factory=list)
    duration: float = 0.0
    # Seconds each file's last import took, by path relative to the DAG folder (for
    # metrics), and the files imported in this pass.
    file_durations: dict[str, float] = field(default_factory=dict)
    imported: list[str] = field(default_factory=list)


# A file's stamp: changed when the file is rewritten, replaced (a new inode) or touched.
Stamp = tuple[int, int, int, int]


def _stamp(path: Path) -> Stamp | None:
    try:
        info = path.stat()
    except OSError:
        return None
    return (info.st_mtime_ns, info.st_ctime_ns, info.st_size, info.st_ino)


def _plugins_stamp() -> tuple[tuple[str, Stamp | None], ...]:
    """The stamps of every file in the plugins folder: DAG versions record plugin
    fingerprints, so a changed plugin re-imports every DAG file."""
    from flowsched.plugins import plugins_folder

    folder = plugins_folder()
    if not folder.is_dir():
        return ()
    return tuple(
        (str(path.relative_to(folder)), _stamp(path)) for path in sorted(folder.rglob("*.py"))
    )


@dataclass
class ParseCache:
    """What the DAG processor knows of the folder between passes, so a pass imports only
    the files whose stamp (mtime, ctime, size, inode) changed, and writes only what
    they changed.

    Unchanged files are imported again once their last import is older than
    ``[scheduler] min_file_process_interval``, at most ``refresh_per_pass`` of them per
    pass (oldest first), so a large folder's refresh never holds an edit back; a
    changed plugin or DAG folder imports everything again.
    """

    refresh_per_pass: int = 200
    root: Path | None = None
    plugins: tuple[tuple[str, Stamp | None], ...] = ()
    # relative path: (stamp, result, when it was imported: time.monotonic())
    files: dict[str, tuple[Stamp | None, ParseResult, float]] = field(default_factory=dict)
    # What the last pass wrote: {dag id: owning file} and the import errors.
    owners: dict[str, str] = field(default_factory=dict)
    errors: list[tuple[str, str]] | None = None


def process_folder(folder: Path | None = None, cache: ParseCache | None = None) -> ProcessReport:
    """Parse the DAG folder once and sync the DB.

    The folder is resolved at every pass, so a deployment that swaps a
    ``current`` symlink is picked up without a restart. Without a ``cache`` every
    file is imported and every DAG written; with one (the DAG processor's), only
    files changed since the last pass, and those due for a refresh.
    """
    started = time.monotonic()
    conf = get_config()
    report = ProcessReport()
    root = Path(folder or conf.core.dags_folder).resolve()
    files = list_dag_files(root)
    relatives = [str(path.relative_to(root)) for path in files]
    stamps = {relative: _stamp(path) for relative, path in zip(relatives, files, strict=True)}
    plugins = _plugins_stamp() if cache is not None else ()
    full = cache is None or cache.root != root or cache.plugins != plugins
    if full:
        wanted = set(relatives)
    else:
        assert cache is not None
        wanted = {
            relative
            for relative in relatives
            if relative not in cache.files or cache.files[relative][0] != stamps[relative]
        }
        due_before = started - conf.scheduler.min_file_process_interval
        due = sorted(
            (imported, relative)
            for relative, (_, _, imported) in cache.files.items()
            if relative in stamps and relative not in wanted and imported <= due_before
        )
        wanted.update(relative for _, relative in due[: cache.refresh_per_pass])
    parsed = {
        result.relative: result
        for result in parse_files(
            root,
            [path for relative, path in zip(relatives, files, strict=True) if relative in wanted],
            conf.core.dagbag_import_timeout,
            conf.scheduler.parsing_processes,
            conf.core.dagbag_import_memory_limit,
        )
    }
    # In listing order, not in the order the imports finished: of two files defining
    # the same DAG id, the first listed always wins.
    results = [
        parsed[relative] if relative in parsed else cache.files[relative][1]  # type: ignore[union-attr]
        for relative in relatives
        if relative in parsed or (cache is not None and relative in cache.files)
    ]
    report.files, report.listed = len(parsed), len(relatives)
    report.imported = list(parsed)
    report.file_durations = {result.relative: result.duration for result in results}
    with session_scope() as session:
        owners, errors = _sync(session, results, report, None if full else set(parsed), cache)
    if cache is not None:
        now = time.monotonic()
        kept = {relative: entry for relative, entry in cache.files.items() if relative in stamps}
        kept.update(
            (relative, (stamps[relative], result, now)) for relative, result in parsed.items()
        )
        cache.files, cache.root, cache.plugins = kept, root, plugins
        cache.owners, cache.errors = owners, errors
    report.duration = time.monotonic() - started
    return report


def _sync(
    session: Session,
    results: list[ParseResult],
    report: ProcessReport,
    changed: set[str] | None,
    cache: ParseCache | None,
) -> tuple[dict[str, str], list[tuple[str, str]]]:
    """Write what ``results`` (every file of the folder, in listing order) say.

    With ``changed`` (the files just imported), only the DAGs of those files are
    written, with those that changed owner or are missing or inactive in the
    database; import errors are rewritten only when they differ from the last pass.
    Returns what was written: {dag id: file} and the import errors.
    """
    now = utcnow()
    owners: dict[str, str] = {}
    errors: list[tuple[str, str]] = []
    definitions: list[tuple[dict[str, Any], ParseResult]] = []
    failed_files = {result.relative for result in results if result.error}
    for result in results:
        if result.error:
            errors.append((result.relative, result.error))
            continue
        for data in result.dags:
            dag_id = data["dag_id"]
            if dag_id in owners:
                message = (
                    f"{result.relative}: DAG id '{dag_id}' is already defined in "
                    f"{owners[dag_id]}; this definition is ignored"
                )
                errors.append((result.relative, message))
                continue
            owners[dag_id] = result.relative
            definitions.append((data, result))
    report.errors = [message for _, message in errors]
    report.dags = len(owners)
    if changed is None or cache is None or cache.errors != errors:
        session.execute(delete(ImportError_))
        session.add_all(
            ImportError_(filename=filename, traceback=message, created_at=now)
            for filename, message in errors
        )
    active = dict(
        session.execute(select(Dag.dag_id, Dag.fileloc).where(Dag.is_active.is_(True))).all()
    )
    previous = cache.owners if cache is not None else {}
    _upsert_dags(
        session,
        [
            (data, result)
            for data, result in definitions
            if changed is None
            or result.relative in changed
            or previous.get(data["dag_id"]) != result.relative
            or data["dag_id"] not in active
        ],
        now,
        report,
    )
    # DAGs whose file still fails keep their last good version active.
    stale = [
        dag_id
        for dag_id, fileloc in active.items()
        if dag_id not in owners and fileloc not in failed_files
    ]
    for start in range(0, len(stale), 500):
        session.execute(
            update(Dag).where(Dag.dag_id.in_(stale[start : start + 500])).values(is_active=False)
        )
    return owners, errors


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


def _references(data: dict[str, Any] | None) -> tuple[Any, Any]:
    """What a DAG's dataset references are made of (dataset_events.sync_dag_references)."""
    if data is None:
        return None, []
    schedule = data.get("schedule") or {}
    consumed = schedule.get("uris") if schedule.get("type") == "dataset" else None
    produced = [(task["task_id"], task.get("outlets") or []) for task in data["tasks"]]
    return consumed, [(task_id, outlets) for task_id, outlets in produced if outlets]


_BATCH = 500


def _upsert_dags(
    session: Session,
    definitions: list[tuple[dict[str, Any], ParseResult]],
    now: datetime,
    report: ProcessReport,
) -> None:
    """Upsert the ``dag`` rows of ``definitions``, each with a new ``dag_version``
    when its file's fingerprint (or a plugin's) changed: rows read and versions
    written a batch at a time, not a query each."""
    for start in range(0, len(definitions), _BATCH):
        batch = definitions[start : start + _BATCH]
        dag_ids = [data["dag_id"] for data, _ in batch]
        dags = {
            dag.dag_id: dag
            for dag in session.scalars(select(Dag).where(Dag.dag_id.in_(dag_ids)).with_for_update())
        }
        version_ids = [dag.latest_version_id for dag in dags.values() if dag.latest_version_id]
        latest = {
            version.dag_id: version
            for version in session.scalars(select(DagVersion).where(DagVersion.id.in_(version_ids)))
        }
        numbers = dict(
            session.execute(
                select(DagVersion.dag_id, func.max(DagVersion.version_number))
                .where(DagVersion.dag_id.in_(dag_ids))
                .group_by(DagVersion.dag_id)
            ).all()
        )
        scheduled = set(
            session.scalars(
                select(DagRun.dag_id)
                .where(DagRun.dag_id.in_(dag_ids), DagRun.run_type == RunType.SCHEDULED.value)
                .distinct()
            )
        )
        new_versions: list[tuple[Dag, DagVersion]] = []
        born: list[Dag] = []  # added once their versions have ids
        for data, result in batch:
            dag_id = data["dag_id"]
            serialized = SerializedDAG(data)
            _warn_long_timeouts(serialized)
            dag = dags.get(dag_id)
            if dag is None:
                paused = data.get("is_paused_upon_creation")
                dag = Dag(
                    dag_id=dag_id,
                    is_paused=get_config().core.dags_are_paused_at_creation
                    if paused is None
                    else paused,
                    tags=[],
                    timezone=data["timezone"],
                    fileloc=result.relative,
                )
                born.append(dag)
            last = latest.get(dag_id)
            schedule_changed = last is None or (
                last.serialized.get("schedule") != data["schedule"]
                or last.serialized.get("start_date") != data["start_date"]
                or last.serialized.get("catchup") != data["catchup"]
            )
            plugins_changed = last is not None and (
                last.serialized.get("plugin_fingerprints", {})
                != data.get("plugin_fingerprints", {})
            )
            if last is None or last.fingerprint != result.fingerprint or plugins_changed:
                number = (numbers.get(dag_id) or 0) + 1
                version = DagVersion(
                    dag_id=dag_id,
                    version_number=number,
                    fingerprint=result.fingerprint,
                    fileloc=result.relative,
                    source=result.source or "",
                    serialized=data,
                    created_at=now,
                )
                new_versions.append((dag, version))
                report.new_versions.append(f"{dag_id} v{number}")
            dag.fileloc = result.relative
            dag.is_active = True
            dag.description = data.get("description")
            dag.schedule = data.get("schedule_description")
            dag.timezone = data["timezone"]
            dag.tags = data.get("tags") or []
            dag.max_active_runs = data["max_active_runs"]
            dag.last_parsed_at = now
            if _references(data) != _references(last.serialized if last else None):
                sync_dag_references(session, data, now)
            if schedule_changed:
                fields = next_run_fields(session, serialized, now, no_runs=dag_id not in scheduled)
                dag.next_data_interval_start = fields[0]
                dag.next_data_interval_end = fields[1]
                dag.next_run_create_after = fields[2]
        # Versions first (one batch), so new dag rows are inserted already pointing at theirs.
        session.add_all(version for _, version in new_versions)
        session.flush()
        for dag, version in new_versions:
            dag.latest_version_id = version.id
        session.add_all(born)
        session.flush()


class DagProcessor:
    """The loop of ``flowsched dag-processor``: parse every interval until stopped."""

    def __init__(self, interval: float | None = None, num_runs: int | None = None) -> None:
        self.interval = interval or get_config().scheduler.dag_dir_list_interval
        self.num_runs = num_runs
        self._stop = threading.Event()
        self._cache = ParseCache()

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
                report = process_folder(cache=self._cache)
                outage.recovered()
                metrics.pass_done(report)
                log.info(
                    "parsed %d files (%d in the folder), %d DAGs, %d errors in %.2fs%s",
                    report.files,
                    report.listed,
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
