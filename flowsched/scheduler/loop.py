"""The scheduler loop.

Each pass, in short transactions:

1. create runs for DAGs whose next interval has ended (``dag`` rows locked
   ``FOR UPDATE SKIP LOCKED``, so two schedulers never create the same run);
2. start queued runs up to ``max_active_runs``;
3. for running runs (locked ``SKIP LOCKED``): apply trigger rules, queue
   what is ready within pool limits, finish runs whose tasks are all done;
4. sweep zombies (running, silent past ``zombie_threshold``) and tasks queued
   past ``task_queued_timeout``: both are failed and retried by policy.

Work that finishes in the executor wakes the loop at once, so a downstream
task starts milliseconds after its upstream ends rather than a poll later.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import threading
import time
from collections import defaultdict
from collections.abc import Collection, Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import exists, func, select, update
from sqlalchemy.orm import Session

from flowsched import __version__
from flowsched.callbacks import wants_run_callback
from flowsched.config import get_config
from flowsched.db.engine import db_outage, get_engine, is_db_outage, session_scope, with_db_retry
from flowsched.db.models import Dag, DagRun, DagVersion, DatasetDagRunQueue, Job, TaskInstance
from flowsched.exceptions import SchedulerNotAllowed
from flowsched.executors.base import BaseExecutor, ExecutorEvent
from flowsched.hostname import get_hostname
from flowsched.lifecycle import (
    QueueTarget,
    apply_decisions,
    fail_unqueueable,
    finish_run,
    finish_try,
    poke_history,
    queue_tries,
    queued_workload,
    requeue_lost_try,
    start_run,
    time_out_run,
)
from flowsched.metrics.scheduler import SchedulerMetrics
from flowsched.outage import EXIT_RESULT_NOT_RECORDED, result_retry_cap
from flowsched.processes import pid_alive, spawn_flowsched
from flowsched.scheduler import mapping
from flowsched.scheduler.concurrency import Concurrency, slots_reader
from flowsched.scheduler.dataset_runs import create_dataset_triggered_runs
from flowsched.scheduler.dependencies import Decision, evaluate
from flowsched.scheduler.past_dependence import past_blockers
from flowsched.scheduler.runs import add_task_instances, create_run
from flowsched.scheduler.timetable import next_run_fields
from flowsched.schedules import Interval
from flowsched.serialization import SerializedDAG
from flowsched.state import FINISHED_TASK_STATES, RunState, RunType, TaskState
from flowsched.timezone import utcnow
from flowsched.workloads import Workload

log = logging.getLogger(__name__)

SCHEDULER_JOB = "scheduler"
SWEEP_INTERVAL = 5.0
# Seconds after the metadata database is back before queued tries are sent again once.
RESEND_AFTER_OUTAGE = 60.0
# Candidates read per pass beyond the open slots, for tries the limits keep back.
CANDIDATE_MARGIN = 16
CANDIDATE_ORDER = (TaskInstance.priority_weight.desc(), TaskInstance.scheduled_at, TaskInstance.id)
# What the pass reads of a try it may queue (rows, not ORM objects).
CANDIDATE_COLUMNS = (
    TaskInstance.id,
    TaskInstance.dag_run_id,
    TaskInstance.dag_id,
    TaskInstance.run_id,
    TaskInstance.task_id,
    TaskInstance.map_index,
    TaskInstance.state,
    TaskInstance.try_number,
    TaskInstance.priority_weight,
    TaskInstance.scheduled_at,
)


def skip_locked_supported() -> tuple[bool, str]:
    """Whether this database can run several schedulers, and why not if it cannot."""
    engine = get_engine()
    name = engine.dialect.name
    if name == "sqlite":
        return False, "SQLite has no row locks"
    if name == "mysql":
        with engine.connect() as connection:
            version = connection.exec_driver_sql("SELECT VERSION()").scalar() or ""
        numbers = tuple(int(part) for part in version.split("-")[0].split(".")[:2])
        if "mariadb" in version.lower():
            if numbers >= (10, 6):
                return True, ""
            return False, f"MariaDB {version} lacks SKIP LOCKED (needs 10.6+)"
        if numbers >= (8, 0):
            return True, ""
        return False, f"MySQL {version} lacks SKIP LOCKED (needs 8.0+)"
    return True, ""


def _waiting(states: dict[str, str]) -> list[str]:
    """Tasks not yet scheduled in a run."""
    return [task_id for task_id, state in states.items() if state == TaskState.NONE.value]


class Scheduler:
    def __init__(
        self,
        executor: BaseExecutor,
        *,
        num_runs: int | None = None,
        run_dag_processor: bool = True,
    ) -> None:
        self.executor = executor
        self.num_runs = num_runs
        self.run_dag_processor = run_dag_processor
        self.conf = get_config()
        self.job_id: int | None = None
        self._stopping = threading.Event()
        self._serialized: dict[int, SerializedDAG] = {}
        self._last_sweep = 0.0
        # Set by schedule_runs when its pass may have left work for the next (run_once).
        self._again = False
        self._last_heartbeat = 0.0
        self._processor: subprocess.Popen[bytes] | None = None
        # Metadata DB outages as this scheduler sees them; see _sweep_allowed().
        self._db_outage = db_outage(log)
        self._resent_after: float | None = None  # the outage (its back_at) re-sent for
        self._started = time.monotonic()
        # Executor events taken but not yet written (kept through a DB outage).
        self._unhandled: list[ExecutorEvent] = []
        self.metrics = SchedulerMetrics(self.conf)

    # -- lifecycle ----------------------------------------------------------
    def stop(self, *_: object) -> None:
        self._stopping.set()
        self.executor.wakeup.set()

    def __enter__(self) -> Scheduler:
        """Register the job, start the executor, requeue orphans: ready for run_once()."""
        self._started = time.monotonic()
        self._through_outage(self._register_job)
        try:
            self.executor.start()
            if self.run_dag_processor:
                self._start_dag_processor()
            self.metrics.start(self.conf)  # its thread after the executor's forks
            self._through_outage(self._reset_orphans)
        except BaseException:
            self._shutdown()
            raise
        log.info("scheduler started (job %s, executor %s)", self.job_id, self.executor.name)
        return self

    def __exit__(self, *exc: object) -> None:
        self._shutdown()

    def run(self) -> None:
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, self.stop)
            signal.signal(signal.SIGINT, self.stop)
        with self:
            passes = 0
            while not self._stopping.is_set():
                try:
                    did_work = self.run_once()
                except Exception as exc:
                    if not is_db_outage(exc):
                        raise
                    # Weather, not death: wait (logged once) and run the pass again.
                    self._stopping.wait(self._db_outage.failed(exc))
                    continue
                self._db_outage.recovered()
                passes += 1
                if self.num_runs is not None and passes >= self.num_runs:
                    break
                if not did_work:
                    self.executor.wakeup.wait(self.conf.scheduler.loop_interval)
                    self.executor.wakeup.clear()

    def _shutdown(self) -> None:
        log.info(
            "scheduler stopping: waiting up to %ss for running tasks",
            self.conf.scheduler.shutdown_grace,
        )
        self.executor.end(self.conf.scheduler.shutdown_grace)
        if self._processor is not None and self._processor.poll() is None:
            self._processor.terminate()
            try:
                self._processor.wait(30)
            except subprocess.TimeoutExpired:
                self._processor.kill()
        try:
            self._handle_events(self.executor.sync())
            if self.job_id is not None:
                with session_scope() as session:
                    session.execute(
                        update(Job)
                        .where(Job.id == self.job_id)
                        .values(state="success", end_date=utcnow())
                    )
        except Exception as exc:
            if not is_db_outage(exc):
                raise
            # The tries stay as recorded; the next scheduler's sweeps take them over.
            log.warning("scheduler stopping without a last database update: %s", exc)
        self.metrics.stop()
        log.info("scheduler stopped")

    # -- database outages ---------------------------------------------------
    def _through_outage(self, action: Any) -> Any:
        """``action()`` retried through a database outage (until stopped or past the limit)."""
        return with_db_retry(action, self._db_outage, self._stopping)

    def _sweep_allowed(self, window: float) -> bool:
        """Whether a sweep may judge tries by a ``window`` of silence now.

        While the database was down, tries could neither heartbeat nor claim nor
        record their result, so silence during this scheduler's own outage
        proves nothing. After the database comes back the sweeps wait one full
        window, in which live tries heartbeat again and finished ones record
        their result (they retry at most every zombie_threshold / 4 s).
        """
        now = time.monotonic()
        if self._db_outage.down or now - self._started < self._startup_grace():
            return False  # down, or this is the first pass since it came back
        back_at = self._db_outage.back_at
        return back_at is None or now - back_at >= window

    def _startup_grace(self) -> float:
        """A scheduler (re)started just after an outage it did not see cannot tell
        silence from death either: first it gives live tries two heartbeats, and
        finished ones a retry of their result (see outage.result_retry_cap)."""
        conf = self.conf.scheduler
        return 2 * conf.task_heartbeat_interval + result_retry_cap(conf.zombie_threshold)

    def _start_dag_processor(self) -> None:
        self._processor = spawn_flowsched(["dag-processor"])  # dies with the scheduler

    def _live_schedulers(self, session: Session) -> tuple[list[Job], list[int]]:
        """(live scheduler jobs, ids of dead ones still marked running).

        A job is dead when its heartbeat is older than ``zombie_threshold``, or
        at once when it ran on this host and its process no longer exists (a
        scheduler restarted after a crash need not wait out the threshold).
        """
        alive_after = utcnow() - timedelta(seconds=self.conf.scheduler.zombie_threshold)
        here = get_hostname()
        live: list[Job] = []
        dead: list[int] = []
        for job in session.scalars(
            select(Job).where(Job.job_type == SCHEDULER_JOB, Job.state == "running")
        ):
            if job.id == self.job_id:
                continue
            gone_here = job.hostname == here and job.pid is not None and not pid_alive(job.pid)
            if job.latest_heartbeat <= alive_after or gone_here:
                dead.append(job.id)
            else:
                live.append(job)
        return live, dead

    def _register_job(self) -> None:
        with session_scope() as session:
            others, _ = self._live_schedulers(session)
            if others:
                supported, reason = skip_locked_supported()
                if not supported:
                    other = others[0]
                    raise SchedulerNotAllowed(
                        f"another scheduler is running (job {other.id} on {other.hostname}, "
                        f"pid {other.pid}) and this database cannot run two safely: {reason}. "
                        "Stop the other one, or use MySQL 8+ / MariaDB 10.6+."
                    )
            now = utcnow()
            job = Job(
                job_type=SCHEDULER_JOB,
                state="running",
                hostname=get_hostname(),
                pid=os.getpid(),
                version=__version__,
                start_date=now,
                latest_heartbeat=now,
            )
            session.add(job)
            session.flush()
            self.job_id = job.id

    def _heartbeat(self) -> None:
        if time.monotonic() - self._last_heartbeat < 1.0:
            return
        self._last_heartbeat = time.monotonic()
        with session_scope() as session:
            session.execute(
                update(Job).where(Job.id == self.job_id).values(latest_heartbeat=utcnow())
            )

    # -- one pass -----------------------------------------------------------
    def run_once(self) -> bool:
        """One pass; whether another should follow at once rather than wait for the
        executor's wake-up (a try ended) or ``loop_interval``.

        A pass that queued tries does not ask for another by that alone: what it
        decided it queued, up to the open slots, and a freed slot or an ended try
        wakes the loop. Only work a pass may have left behind does: runs created,
        started or finished, mapped tasks expanded, a full batch of tries queued
        (``max_tis_per_query``), crashed tries failed, a sweep's finds. A second pass
        right after each one cost the scheduler half its CPU in a busy run, and
        delayed the tries it had just queued on a small machine.
        """
        started = time.monotonic()
        did_work = self._run_pass()
        self.metrics.pass_done(time.monotonic() - started, self.executor.slots_available())
        self.metrics.collect_if_due(self.job_id)
        return did_work

    def _run_pass(self) -> bool:
        self._heartbeat()
        did_work = self._handle_events(self.executor.sync())
        due, datasets, queued, running = self._pending()
        created = self.create_due_runs(checked=True) if due else 0
        created += self.create_dataset_runs(checked=True) if datasets else 0
        started = self.start_queued_runs(checked=True) if queued or created else 0
        did_work |= created + started > 0
        self._again = False
        workloads = self.schedule_runs(checked=True) if running or started else []
        for workload in workloads:
            self.executor.queue(workload)
        did_work |= self._again
        if time.monotonic() - self._last_sweep >= SWEEP_INTERVAL:
            self._last_sweep = time.monotonic()
            zombies = stuck = 0
            if self._sweep_allowed(self.conf.scheduler.zombie_threshold):
                zombies = self.sweep_zombies()
            if self._sweep_allowed(self.conf.scheduler.task_queued_timeout):
                stuck = self.sweep_stuck_queued()
            self._resend_after_outage()
            self.metrics.swept(zombies, stuck)
            did_work |= zombies + stuck > 0
        return did_work

    def _dag(self, session: Session, version_id: int) -> SerializedDAG:
        dag = self._version(session, version_id)
        assert dag is not None
        return dag

    def _version(self, session: Session, version_id: int) -> SerializedDAG | None:
        """The serialized DAG of a version, read and parsed once per scheduler (a version
        never changes); None if there is no such version."""
        dag = self._serialized.get(version_id)
        if dag is None:
            serialized = session.scalar(
                select(DagVersion.serialized).where(DagVersion.id == version_id)
            )
            if serialized is None:
                return None
            dag = self._serialized[version_id] = SerializedDAG(serialized)
        return dag

    def _latest_versions(self, session: Session, dag_ids: set[str]) -> dict[str, Any]:
        """{dag id: (id, fingerprint, fileloc) of its latest version}: only the columns a
        pass needs (the serialized DAG, large, is read once per version by _dag)."""
        rows = session.execute(
            select(Dag.dag_id, DagVersion.id, DagVersion.fingerprint, DagVersion.fileloc)
            .join(DagVersion, DagVersion.id == Dag.latest_version_id)
            .where(Dag.dag_id.in_(dag_ids))
        ).all()
        return {row.dag_id: row for row in rows}

    # -- runs ---------------------------------------------------------------
    @staticmethod
    def _any(condition: Any) -> bool:
        """A lock-free "is there anything to do?" check before a write transaction."""
        with session_scope(read_only=True) as session:
            return bool(session.scalar(select(exists().where(condition))))

    @staticmethod
    def _due(now: datetime) -> Any:
        return (
            (Dag.next_run_create_after <= now) & Dag.is_paused.is_(False) & Dag.is_active.is_(True)
        )

    def _pending(self) -> tuple[bool, bool, bool, bool]:
        """Is there (a DAG due for a run, a dataset-triggered run, a queued run, a running
        run)? One lock-free read for the four, so an idle pass is one short transaction."""
        with session_scope(read_only=True) as session:
            row = session.execute(
                select(
                    exists().where(self._due(utcnow())),
                    exists().where(DatasetDagRunQueue.target_dag_id.is_not(None)),
                    exists().where(DagRun.state == RunState.QUEUED.value),
                    exists().where(DagRun.state == RunState.RUNNING.value),
                )
            ).one()
        return bool(row[0]), bool(row[1]), bool(row[2]), bool(row[3])

    def create_due_runs(self, *, checked: bool = False) -> int:
        """Runs of DAGs whose next interval has ended (``checked``: the caller has
        just seen there are some, no need to look again)."""
        now = utcnow()
        created = 0
        if not checked and not self._any(self._due(now)):
            return 0
        with session_scope() as session:
            dags = session.scalars(
                select(Dag)
                .where(
                    Dag.is_paused.is_(False),
                    Dag.is_active.is_(True),
                    Dag.next_run_create_after <= now,
                )
                .limit(50)
                .with_for_update(skip_locked=True)
            ).all()
            for dag in dags:
                if dag.latest_version_id is None or dag.next_data_interval_start is None:
                    continue
                serialized = self._dag(session, dag.latest_version_id)
                interval = Interval(dag.next_data_interval_start, dag.next_data_interval_end)
                create_run(
                    session,
                    dag.dag_id,
                    run_type=RunType.SCHEDULED,
                    logical_date=interval.start,
                    interval=interval,
                    now=now,
                )
                created += 1
                fields = next_run_fields(session, serialized, now, after=interval)
                dag.next_data_interval_start, dag.next_data_interval_end = fields[0], fields[1]
                dag.next_run_create_after = fields[2]
        return created

    def create_dataset_runs(self, *, checked: bool = False) -> int:
        """Runs of DAGs scheduled on datasets that have all been updated (dataset_runs.py)."""
        if not checked and not self._any(DatasetDagRunQueue.target_dag_id.is_not(None)):
            return 0
        with session_scope() as session:
            created = create_dataset_triggered_runs(session, utcnow())
        for run_id in created:
            log.info("dataset-triggered run %s created", run_id)
        return len(created)

    def start_queued_runs(self, *, checked: bool = False) -> int:
        started = 0
        now = utcnow()
        if not checked and not self._any(DagRun.state == RunState.QUEUED.value):
            return 0
        with session_scope() as session:
            queued = session.scalars(
                select(DagRun)
                .where(DagRun.state == RunState.QUEUED.value)
                .order_by(DagRun.logical_date, DagRun.id)
                .limit(200)
                .with_for_update(skip_locked=True)
            ).all()
            if not queued:
                return 0
            dag_ids = {run.dag_id for run in queued}
            active = dict(
                session.execute(
                    select(DagRun.dag_id, func.count())
                    .where(DagRun.dag_id.in_(dag_ids), DagRun.state == RunState.RUNNING.value)
                    .group_by(DagRun.dag_id)
                ).all()
            )
            limits = dict(
                session.execute(
                    select(Dag.dag_id, Dag.max_active_runs).where(Dag.dag_id.in_(dag_ids))
                ).all()
            )
            paused = set(
                session.scalars(
                    select(Dag.dag_id).where(Dag.dag_id.in_(dag_ids), Dag.is_paused.is_(True))
                ).all()
            )
            for run in queued:
                if run.dag_id in paused:
                    continue
                if active.get(run.dag_id, 0) >= limits.get(run.dag_id, 16):
                    continue
                start_run(run, now)
                active[run.dag_id] = active.get(run.dag_id, 0) + 1
                started += 1
        return started

    def schedule_runs(self, *, checked: bool = False) -> list[Workload]:
        """Apply trigger rules in running runs and queue what is ready.

        Decisions are made on (task, state) tuples and written as conditional
        bulk UPDATEs, and only the tries that fit the open slots are loaded as
        objects: a pass over a 1,000-task run costs one light query, not 1,000
        ORM objects.
        """
        now = utcnow()
        if not checked and not self._any(DagRun.state == RunState.RUNNING.value):
            return []
        with session_scope() as session:
            runs = session.scalars(
                select(DagRun)
                .where(DagRun.state == RunState.RUNNING.value)
                .order_by(DagRun.last_scheduling_decision, DagRun.id)
                .limit(100)
                .with_for_update(skip_locked=True)
            ).all()
            if not runs:
                return []
            versions = self._latest_versions(session, {run.dag_id for run in runs})
            rows, copies = self._ti_rows(session, [run.id for run in runs])
            changes: list[tuple[int, str, str]] = []
            for run in runs:
                run.last_scheduling_decision = now
                version = versions.get(run.dag_id)
                if version is None:
                    continue
                dag = self._dag(session, version.id)
                if self._timed_out(session, run, dag, now):
                    self._again = True
                    continue
                run_rows = rows.get(run.id, {})
                if set(dag.tasks) - set(run_rows):
                    add_task_instances(session, run, dag, set(run_rows))
                    session.flush()
                    run_rows = self._ti_rows(session, [run.id])[0].get(run.id, {})
                states = {task_id: row[1] for task_id, row in run_rows.items()}
                retry_at = {task_id: row[2] for task_id, row in run_rows.items()}
                held = past_blockers(session, run, dag, _waiting(states))
                for task_id, new_state in self._decide(dag, states, retry_at, now, held).items():
                    spec = dag.tasks.get(task_id)
                    if spec and spec.mapped and new_state == TaskState.SCHEDULED.value:
                        # Its upstreams are done: expand it (scheduler/mapping.py).
                        states[task_id] = mapping.expand(
                            session, run, spec, run_rows[task_id][0], now
                        )
                        self._again = True
                        continue
                    changes.append((run_rows[task_id][0], run_rows[task_id][1], new_state))
                changes.extend(mapping.copy_decisions(dag, states, copies.get(run.id, {}), now))
                self._again |= self._maybe_finish_run(session, run, dag, states)
            apply_decisions(session, changes, now)
            return self._queue_scheduled(session, runs, versions, now)

    @staticmethod
    def _timed_out(session: Session, run: DagRun, dag: SerializedDAG, now: datetime) -> bool:
        """A run past its DAG's dagrun_timeout fails; its unfinished tasks are skipped."""
        timeout = dag.dagrun_timeout
        if timeout is None or run.start_date is None or now - run.start_date <= timeout:
            return False
        reason = f"dagrun_timeout of {timeout} exceeded"
        skipped = time_out_run(session, run.id, reason)
        finish_run(
            session,
            run,
            RunState.FAILED,
            reason="timed_out",
            request_callback=wants_run_callback(dag, RunState.FAILED),
        )
        log.info(
            "run %s of %s failed: %s (%d tasks skipped)", run.run_id, run.dag_id, reason, skipped
        )
        return True

    @staticmethod
    def _ti_rows(
        session: Session, run_ids: list[int]
    ) -> tuple[
        dict[int, dict[str, mapping.Row]],
        dict[int, dict[str, list[mapping.Row]]],
    ]:
        """{run id: {task id: (ti id, state, next retry)}} without building ORM objects,
        and the copies of expanded mapped tasks: {run id: {task id: [rows]}}. A mapped
        task's row carries its copies' collapsed state (scheduler/mapping.py)."""
        out: dict[int, dict[str, mapping.Row]] = defaultdict(dict)
        copies: dict[int, dict[str, list[mapping.Row]]] = defaultdict(lambda: defaultdict(list))
        for run_id, ti_id, task_id, map_index, state, retry_at in session.execute(
            select(
                TaskInstance.dag_run_id,
                TaskInstance.id,
                TaskInstance.task_id,
                TaskInstance.map_index,
                TaskInstance.state,
                TaskInstance.next_retry_at,
            ).where(TaskInstance.dag_run_id.in_(run_ids))
        ):
            if map_index < 0:
                out[run_id][task_id] = (ti_id, state, retry_at)
            else:
                copies[run_id][task_id].append((ti_id, state, retry_at))
        for run_id, tasks in copies.items():
            for task_id, rows in tasks.items():
                out[run_id][task_id] = (rows[0][0], mapping.collapse(r[1] for r in rows), None)
        return out, copies

    @staticmethod
    def _decide(
        dag: SerializedDAG,
        states: dict[str, str],
        retry_at: dict[str, datetime | None],
        now: datetime,
        held: Collection[str] = (),
    ) -> dict[str, str]:
        """New states by trigger rule, in topological order; updates ``states`` in place.

        Tasks in ``held`` (waiting on their previous run: depends_on_past) are not
        scheduled even when their trigger rule is met.
        """
        decided: dict[str, str] = {}
        for task_id in dag.topological_order():
            state = states.get(task_id)
            new_state = None
            if state == TaskState.UP_FOR_RETRY.value:
                due = retry_at.get(task_id)
                if due is None or due <= now:
                    new_state = TaskState.SCHEDULED.value
            elif state == TaskState.NONE.value:
                spec = dag.tasks[task_id]
                decision = evaluate(spec.trigger_rule, [states[up] for up in spec.upstream])
                if decision is Decision.READY and task_id in held:
                    decision = Decision.WAIT
                ready = TaskState.SUCCESS if spec.is_empty else TaskState.SCHEDULED
                new_state = {
                    Decision.READY: ready.value,
                    Decision.UPSTREAM_FAILED: TaskState.UPSTREAM_FAILED.value,
                    Decision.SKIP: TaskState.SKIPPED.value,
                }.get(decision)
            if new_state is not None:
                decided[task_id] = states[task_id] = new_state
        for task_id, state in states.items():
            if task_id not in dag.tasks and state not in FINISHED_TASK_STATES:
                # The task was removed from the DAG's file since the run began.
                decided[task_id] = states[task_id] = TaskState.SKIPPED.value
        return decided

    def _maybe_finish_run(
        self, session: Session, run: DagRun, dag: SerializedDAG, states: dict[str, str]
    ) -> bool:
        """Finish the run if all its tasks are; whether it did."""
        if not all(state in FINISHED_TASK_STATES for state in states.values()):
            return False
        leaves = [task_id for task_id, children in dag.downstream.items() if not children]
        failed = any(
            states.get(task_id) in (TaskState.FAILED.value, TaskState.UPSTREAM_FAILED.value)
            for task_id in leaves
        )
        state = RunState.FAILED if failed else RunState.SUCCESS
        finish_run(
            session,
            run,
            state,
            reason="task_failure" if failed else "success",
            request_callback=wants_run_callback(dag, state),
        )
        log.info("run %s of %s finished: %s", run.run_id, run.dag_id, run.state)
        return True

    def _queue_scheduled(
        self,
        session: Session,
        runs: Sequence[DagRun],
        versions: dict[str, Any],
        now: datetime,
    ) -> list[Workload]:
        """Queue scheduled tries of the locked runs, by priority, within slots and pools.

        Candidates are read as rows (no ORM objects) and queued together
        (lifecycle.queue_tries): a few statements per pass, not two per try.
        """
        max_tis = self.conf.scheduler.max_tis_per_query
        limit = min(self.executor.slots_available(), max_tis)
        if limit <= 0:
            return []
        run_ids = [run.id for run in runs]
        # Read only as many candidates as the open slots want, plus a margin: reading
        # max_tis_per_query rows per pass to queue the one try a freed slot takes made a
        # 1,000-task fan-out quadratic. Further only when the limits kept some back.
        window = min(limit + CANDIDATE_MARGIN, max_tis)
        candidates, full = self._candidates(session, run_ids, now, window)
        if not candidates:
            return []
        # Counts for every locked run's DAG: the wider read may reach any of them.
        limits = Concurrency.load(
            session,
            {run.dag_id for run in runs},
            slots_reader(session, lambda version_id: self._version(session, version_id)),
        )
        chosen: list[tuple[Any, QueueTarget]] = []
        backlog = self._repoke_backlog(session, candidates)
        self._choose(session, candidates, chosen, limit, limits, backlog, versions, now)
        if len(chosen) < limit and full and window < max_tis:
            seen = {ti.id for ti in candidates}
            wider, _ = self._candidates(session, run_ids, now, max_tis)
            unseen = [ti for ti in wider if ti.id not in seen]
            backlog = backlog or self._repoke_backlog(session, unseen)
            self._choose(session, unseen, chosen, limit, limits, backlog, versions, now)
        if len(chosen) >= max_tis:
            self._again = True  # a full batch: more may be waiting for the next pass
        return queue_tries(session, chosen, job_id=self.job_id, now=now)

    @staticmethod
    def _candidates(
        session: Session, run_ids: list[int], now: datetime, window: int
    ) -> tuple[list[Any], bool]:
        """Tries of ``run_ids`` that may be queued, best first, up to ``window`` of each kind;
        and whether a kind filled its window (there may be more)."""
        ready = TaskInstance.state == TaskState.SCHEDULED.value
        # A sensor between pokes (mode="reschedule") whose reschedule date has come;
        # fetched apart, so a crowd of due pokes never hides fresh tasks past the window.
        due_poke = (TaskInstance.state == TaskState.UP_FOR_RESCHEDULE.value) & (
            TaskInstance.next_retry_at <= now
        )
        kinds = [
            session.execute(
                select(*CANDIDATE_COLUMNS)
                .where(TaskInstance.dag_run_id.in_(run_ids), condition)
                .order_by(*CANDIDATE_ORDER)
                .limit(window)
            ).all()
            for condition in (ready, due_poke)
        ]
        candidates = sorted(
            (row for rows in kinds for row in rows),
            key=lambda ti: (-ti.priority_weight, ti.scheduled_at or now, ti.id),
        )
        return candidates, any(len(rows) >= window for rows in kinds)

    def _choose(
        self,
        session: Session,
        candidates: Sequence[Any],
        chosen: list[tuple[Any, QueueTarget]],
        limit: int,
        limits: Concurrency,
        backlog: int,
        versions: dict[str, Any],
        now: datetime,
    ) -> None:
        """Add to ``chosen``, in order, the candidates the limits let through, up to ``limit``."""
        default_queue = self.conf.celery.default_queue
        for ti in candidates:
            if len(chosen) >= limit:
                break
            if (
                ti.state == TaskState.UP_FOR_RESCHEDULE.value
                and backlog + len(chosen) >= self.conf.scheduler.max_queued_reschedules
            ):
                continue  # a sensor's next poke yields to a backlog: it waits here, not there
            version = versions.get(ti.dag_id)
            dag = self._dag(session, version.id) if version else None
            spec = dag.tasks.get(ti.task_id) if dag else None
            if version is None or dag is None or spec is None:
                continue
            if spec.pool not in limits.pool_slots:
                reason = f"pool '{spec.pool}' does not exist"
                instance = session.get(TaskInstance, ti.id)
                if instance is not None and fail_unqueueable(session, instance, reason, now):
                    log.error("%s.%s: %s", ti.dag_id, ti.task_id, reason)
                continue
            if limits.blocker(dag, spec, ti.dag_run_id) is not None:
                continue  # stays scheduled; `tasks failed-deps` shows why
            # Counted as taken now; one another writer moves first is just not queued.
            limits.take(dag, spec, ti.dag_run_id)
            target = QueueTarget(
                fingerprint=version.fingerprint,
                dag_version_id=version.id,
                fileloc=version.fileloc,
                queue=spec.queue or default_queue,
                plugins=spec.plugin_files,
            )
            chosen.append((ti, target))

    @staticmethod
    def _repoke_backlog(session: Session, candidates: Sequence[Any]) -> int:
        """Tries queued but not started, counted only when a sensor's poke is due."""
        if not any(ti.state == TaskState.UP_FOR_RESCHEDULE.value for ti in candidates):
            return 0
        return int(
            session.scalar(
                select(func.count())
                .select_from(TaskInstance)
                .where(TaskInstance.state == TaskState.QUEUED.value)
            )
            or 0
        )

    # -- failures -----------------------------------------------------------
    def _fail(
        self,
        session: Session,
        ti: TaskInstance,
        error: str,
        expected: tuple[TaskState, ...],
    ) -> None:
        state = finish_try(
            session,
            ti.id,
            ti.try_number,
            success=False,
            error=error,
            expected_states=expected,
            request_callbacks=True,  # its process died: the callback runner runs them
        )
        if state is not None:
            log.warning(
                "%s.%s try %s: %s -> %s", ti.dag_id, ti.task_id, ti.try_number, error, state
            )

    def _handle_events(self, events: list[ExecutorEvent]) -> bool:
        """Fail tries whose process ended without recording a result.

        Events are kept until written: a database outage delays them, never
        drops them. A process that gave up recording its result because the
        database stayed down (EXIT_RESULT_NOT_RECORDED) did not fail: its try
        is left to the zombie sweep, which re-queues it as lost.
        """
        self._unhandled.extend(events)
        if not self._unhandled:
            return False
        events = [e for e in self._unhandled if e.exit_code != EXIT_RESULT_NOT_RECORDED]
        ids = sorted({event.ti_id for event in events})
        unfinished = (TaskState.RUNNING.value, TaskState.QUEUED.value)
        with session_scope() as session:
            # One read for the lot: most tries recorded their result, so few come back.
            open_tries: dict[int, TaskInstance] = {}
            for start in range(0, len(ids), 500):
                open_tries.update(
                    (ti.id, ti)
                    for ti in session.scalars(
                        select(TaskInstance).where(
                            TaskInstance.id.in_(ids[start : start + 500]),
                            TaskInstance.state.in_(unfinished),
                        )
                    )
                )
            for event in events:
                ti = open_tries.get(event.ti_id)
                if ti is None or ti.try_number != event.try_number:
                    continue
                if ti.state in unfinished:
                    if event.exit_code == 0 and poke_history(session, ti.id, ti.try_number)[1]:
                        # The end of an earlier poke of a rescheduled sensor: its try was
                        # queued again since (same try number); not this process's death.
                        continue
                    self._fail(
                        session,
                        ti,
                        f"task process exited with code {event.exit_code} "
                        "before recording a result",
                        (TaskState.RUNNING, TaskState.QUEUED),
                    )
        self._unhandled = []
        return True

    def _requeue_lost(
        self, session: Session, ti: TaskInstance, reason: str, expected: tuple[TaskState, ...]
    ) -> None:
        state = requeue_lost_try(
            session,
            ti.id,
            ti.try_number,
            reason=reason,
            expected_states=expected,
            max_lost=self.conf.scheduler.max_lost_tries,
        )
        if state is not None:
            log.warning(
                "%s.%s try %s: %s -> %s", ti.dag_id, ti.task_id, ti.try_number, reason, state
            )

    def sweep_zombies(self) -> int:
        limit = utcnow() - timedelta(seconds=self.conf.scheduler.zombie_threshold)
        zombie = (TaskInstance.state == TaskState.RUNNING.value) & (
            TaskInstance.last_heartbeat < limit
        )
        if not self._any(zombie):
            return 0
        with session_scope() as session:
            zombies = session.scalars(
                select(TaskInstance).where(zombie).limit(100).with_for_update(skip_locked=True)
            ).all()
            for ti in zombies:
                # Its worker (or host) died, or lost the database: not the task's failure.
                self._requeue_lost(
                    session,
                    ti,
                    f"zombie: no heartbeat from {ti.worker_nodename or ti.hostname} "
                    f"(pid {ti.pid}) for over {self.conf.scheduler.zombie_threshold:g} s",
                    (TaskState.RUNNING,),
                )
            return len(zombies)

    def _resend_after_outage(self) -> int:
        """Send the message of every try still queued once more, once per database outage,
        ``RESEND_AFTER_OUTAGE`` s after it ended.

        Around an outage a pass can commit its tries as queued and still lose their
        messages (a COMMIT that reached the server while the connection dropped: the
        pass is retried and finds nothing to send), and the stuck-queued sweep would
        re-queue them only after ``task_queued_timeout``. A second message is
        harmless: the claim is one conditional UPDATE, so whichever copy comes second
        claims nothing and runs nothing. Executors whose tries die with the scheduler
        hold their queue in memory and are left to the orphan reset.
        """
        back_at = self._db_outage.back_at
        if (
            self.executor.tasks_die_with_scheduler
            or back_at is None
            or back_at == self._resent_after
            or time.monotonic() - back_at < RESEND_AFTER_OUTAGE
        ):
            return 0
        self._resent_after = back_at
        workloads: list[Workload] = []
        with session_scope(read_only=True) as session:
            queued = session.scalars(
                select(TaskInstance)
                .where(TaskInstance.state == TaskState.QUEUED.value)
                .order_by(TaskInstance.queued_at)
                .limit(self.conf.scheduler.max_tis_per_query)
            ).all()
            for ti in queued:
                version = session.get(DagVersion, ti.dag_version_id) if ti.dag_version_id else None
                dag = self._dag(session, version.id) if version else None
                spec = dag.tasks.get(ti.task_id) if dag else None
                if version is None or spec is None:
                    continue  # left to the stuck-queued sweep
                target = QueueTarget(
                    fingerprint=ti.fingerprint or version.fingerprint,
                    dag_version_id=version.id,
                    fileloc=version.fileloc,
                    queue=ti.queue or spec.queue or self.conf.celery.default_queue,
                    plugins=spec.plugin_files,
                )
                workloads.append(queued_workload(session, ti, target))
        for workload in workloads:
            self.executor.queue(workload)
        if workloads:
            log.warning(
                "re-sent %d queued tries %g s after the metadata database came back (a "
                "message lost around the outage would otherwise wait for task_queued_timeout; "
                "a duplicate claims nothing)",
                len(workloads),
                RESEND_AFTER_OUTAGE,
            )
        return len(workloads)

    def sweep_stuck_queued(self) -> int:
        limit = utcnow() - timedelta(seconds=self.conf.scheduler.task_queued_timeout)
        stuck = (TaskInstance.state == TaskState.QUEUED.value) & (TaskInstance.queued_at < limit)
        if not self._any(stuck):
            return 0
        # Held in this scheduler's memory through a broker outage: not lost, late.
        unsent = self.executor.not_yet_late(self.conf.scheduler.task_queued_timeout)
        with session_scope() as session:
            stuck = session.scalars(
                select(TaskInstance).where(stuck).limit(100).with_for_update(skip_locked=True)
            ).all()
            for ti in stuck:
                if (ti.id, ti.try_number) in unsent:
                    continue
                # Its message was lost (broker restarted empty) or no worker took it.
                self._requeue_lost(
                    session,
                    ti,
                    f"queued for over {self.conf.scheduler.task_queued_timeout:g} s without "
                    "starting (lost message or dead worker)",
                    (TaskState.QUEUED,),
                )
            return len(stuck)

    def _reset_orphans(self) -> None:
        """Queued tasks of a dead scheduler's local executor will never start: requeue them."""
        if not self.executor.tasks_die_with_scheduler:
            return
        with session_scope() as session:
            live, _ = self._live_schedulers(session)
            live_ids = [job.id for job in live]
            if self.job_id is not None:
                live_ids.append(self.job_id)
            orphans = session.scalars(
                select(TaskInstance).where(
                    TaskInstance.state == TaskState.QUEUED.value,
                    TaskInstance.queued_by_job_id.is_not(None),
                    TaskInstance.queued_by_job_id.not_in(live_ids),
                )
            ).all()
            for ti in orphans:
                self._requeue_lost(session, ti, "orphaned: its scheduler died", (TaskState.QUEUED,))
            if orphans:
                log.info("re-queued %d tasks orphaned by a dead scheduler", len(orphans))
            _, dead = self._live_schedulers(session)
            session.execute(
                update(Job)
                .where(Job.id.in_(dead), Job.state == "running")
                .values(state="failed", end_date=utcnow())
            )
