"""SQLAlchemy models of the metadata database.

Every timestamp is :class:`UtcDateTime` (aware UTC). Rows that belong to a DAG
carry ``dag_id`` so :func:`flowsched.operations.delete_dag` can remove all of
them in one transaction.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    Boolean,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from flowsched.db.types import JsonText, LongText, UtcDateTime
from flowsched.state import TaskState

ID_LENGTH = 250


class Base(DeclarativeBase):
    pass


class Dag(Base):
    __tablename__ = "dag"

    dag_id: Mapped[str] = mapped_column(String(ID_LENGTH), primary_key=True)
    fileloc: Mapped[str] = mapped_column(String(1000))
    is_paused: Mapped[bool] = mapped_column(Boolean, default=False)
    is_active: Mapped[bool] = mapped_column(Boolean, default=True)
    description: Mapped[str | None] = mapped_column(String(2000))
    schedule: Mapped[str | None] = mapped_column(String(200))
    timezone: Mapped[str] = mapped_column(String(100))
    tags: Mapped[Any] = mapped_column(JsonText, default=list)
    max_active_runs: Mapped[int] = mapped_column(Integer, default=16)
    latest_version_id: Mapped[int | None] = mapped_column(Integer)
    next_data_interval_start: Mapped[datetime | None] = mapped_column(UtcDateTime)
    next_data_interval_end: Mapped[datetime | None] = mapped_column(UtcDateTime)
    next_run_create_after: Mapped[datetime | None] = mapped_column(UtcDateTime)
    last_parsed_at: Mapped[datetime | None] = mapped_column(UtcDateTime)

    __table_args__ = (Index("idx_dag_next_run", "is_paused", "is_active", "next_run_create_after"),)


class DagVersion(Base):
    """One row per distinct content of a DAG's file: runs and tries point here."""

    __tablename__ = "dag_version"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    dag_id: Mapped[str] = mapped_column(String(ID_LENGTH), index=True)
    version_number: Mapped[int] = mapped_column(Integer)
    fingerprint: Mapped[str] = mapped_column(String(64))
    fileloc: Mapped[str] = mapped_column(String(1000))
    source: Mapped[str] = mapped_column(LongText)
    serialized: Mapped[Any] = mapped_column(JsonText)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)

    __table_args__ = (UniqueConstraint("dag_id", "version_number", name="uq_dag_version_number"),)


class DagRun(Base):
    __tablename__ = "dag_run"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    dag_id: Mapped[str] = mapped_column(String(ID_LENGTH))
    run_id: Mapped[str] = mapped_column(String(ID_LENGTH))
    run_type: Mapped[str] = mapped_column(String(20))
    state: Mapped[str] = mapped_column(String(20))
    logical_date: Mapped[datetime] = mapped_column(UtcDateTime)
    data_interval_start: Mapped[datetime | None] = mapped_column(UtcDateTime)
    data_interval_end: Mapped[datetime | None] = mapped_column(UtcDateTime)
    conf: Mapped[Any] = mapped_column(JsonText, nullable=True)
    dag_version_id: Mapped[int | None] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    start_date: Mapped[datetime | None] = mapped_column(UtcDateTime)
    end_date: Mapped[datetime | None] = mapped_column(UtcDateTime)
    last_scheduling_decision: Mapped[datetime | None] = mapped_column(UtcDateTime)
    # The task that created this run (TriggerDagRunOperator), for the link back in the UI.
    triggered_by_dag_id: Mapped[str | None] = mapped_column(String(ID_LENGTH))
    triggered_by_run_id: Mapped[str | None] = mapped_column(String(ID_LENGTH))
    triggered_by_task_id: Mapped[str | None] = mapped_column(String(ID_LENGTH))

    task_instances: Mapped[list[TaskInstance]] = relationship(
        back_populates="dag_run", cascade="all, delete-orphan", passive_deletes=True
    )

    __table_args__ = (
        UniqueConstraint("dag_id", "run_id", name="uq_dag_run_id"),
        Index("idx_dag_run_state", "state", "dag_id"),
        Index("idx_dag_run_dag_logical", "dag_id", "logical_date"),
    )


class TryRecord:
    """What is known of a try, kept on the instance (current try) and in its history."""

    hostname: Mapped[str | None] = mapped_column(String(255))
    worker_nodename: Mapped[str | None] = mapped_column(String(255))
    pid: Mapped[int | None] = mapped_column(Integer)
    fingerprint: Mapped[str | None] = mapped_column(String(64))
    dag_version_id: Mapped[int | None] = mapped_column(Integer)
    queued_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    start_date: Mapped[datetime | None] = mapped_column(UtcDateTime)
    end_date: Mapped[datetime | None] = mapped_column(UtcDateTime)
    duration: Mapped[float | None] = mapped_column(Float)


class TaskInstance(TryRecord, Base):
    """The current state of one task in one run; ``task_try`` keeps every try."""

    __tablename__ = "task_instance"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    dag_run_id: Mapped[int] = mapped_column(ForeignKey("dag_run.id", ondelete="CASCADE"))
    dag_id: Mapped[str] = mapped_column(String(ID_LENGTH))
    run_id: Mapped[str] = mapped_column(String(ID_LENGTH))
    task_id: Mapped[str] = mapped_column(String(ID_LENGTH))
    # Airflow's map_index: -1 for an unmapped task, 0..n-1 for each expanded copy.
    map_index: Mapped[int] = mapped_column(Integer, default=-1, server_default="-1")
    state: Mapped[str] = mapped_column(String(20), default=TaskState.NONE.value)
    try_number: Mapped[int] = mapped_column(Integer, default=0)
    max_tries: Mapped[int] = mapped_column(Integer, default=0)
    operator: Mapped[str | None] = mapped_column(String(100))
    queue: Mapped[str | None] = mapped_column(String(100))
    pool: Mapped[str] = mapped_column(String(100), default="default_pool")
    priority_weight: Mapped[int] = mapped_column(Integer, default=1)
    queued_by_job_id: Mapped[int | None] = mapped_column(Integer)
    scheduled_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    next_retry_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    last_heartbeat: Mapped[datetime | None] = mapped_column(UtcDateTime)
    # Tries lost through no fault of the task (dead worker, lost message), re-queued
    # without spending a retry; bounded by [scheduler] max_lost_tries.
    lost_count: Mapped[int] = mapped_column(Integer, default=0, server_default="0")

    dag_run: Mapped[DagRun] = relationship(back_populates="task_instances")

    __table_args__ = (
        UniqueConstraint("dag_run_id", "task_id", "map_index", name="uq_ti_run_task_map"),
        Index("idx_ti_state", "state", "pool"),
        Index("idx_ti_dag_task", "dag_id", "task_id"),
    )


class TaskTry(TryRecord, Base):
    """History: one row per try, kept when the task instance is cleared and re-run."""

    __tablename__ = "task_try"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    task_instance_id: Mapped[int] = mapped_column(
        ForeignKey("task_instance.id", ondelete="CASCADE")
    )
    dag_id: Mapped[str] = mapped_column(String(ID_LENGTH))
    run_id: Mapped[str] = mapped_column(String(ID_LENGTH))
    task_id: Mapped[str] = mapped_column(String(ID_LENGTH))
    map_index: Mapped[int] = mapped_column(Integer, default=-1, server_default="-1")
    try_number: Mapped[int] = mapped_column(Integer)
    state: Mapped[str] = mapped_column(String(20))
    error: Mapped[str | None] = mapped_column(LongText)
    rendered_fields: Mapped[Any] = mapped_column(JsonText, nullable=True)

    __table_args__ = (
        UniqueConstraint("task_instance_id", "try_number", name="uq_try_ti_number"),
        Index("idx_try_dag", "dag_id", "run_id", "task_id"),
    )


class TaskReschedule(Base):
    """One poke of a sensor in mode="reschedule" that ended asking to poke again later.

    As Airflow's ``task_reschedule``: the first row of a try dates its first poke
    (a sensor's ``timeout`` counts from there) and the row count is its poke count.
    """

    __tablename__ = "task_reschedule"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    task_instance_id: Mapped[int] = mapped_column(
        ForeignKey("task_instance.id", ondelete="CASCADE")
    )
    dag_id: Mapped[str] = mapped_column(String(ID_LENGTH))
    run_id: Mapped[str] = mapped_column(String(ID_LENGTH))
    task_id: Mapped[str] = mapped_column(String(ID_LENGTH))
    try_number: Mapped[int] = mapped_column(Integer)
    start_date: Mapped[datetime] = mapped_column(UtcDateTime)
    end_date: Mapped[datetime] = mapped_column(UtcDateTime)
    duration: Mapped[float | None] = mapped_column(Float)
    reschedule_date: Mapped[datetime] = mapped_column(UtcDateTime)

    __table_args__ = (
        Index("idx_task_reschedule_ti_try", "task_instance_id", "try_number"),
        Index("idx_task_reschedule_dag", "dag_id", "run_id", "task_id"),
    )


class XCom(Base):
    __tablename__ = "xcom"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    task_instance_id: Mapped[int] = mapped_column(
        ForeignKey("task_instance.id", ondelete="CASCADE")
    )
    dag_id: Mapped[str] = mapped_column(String(ID_LENGTH))
    run_id: Mapped[str] = mapped_column(String(ID_LENGTH))
    task_id: Mapped[str] = mapped_column(String(ID_LENGTH))
    map_index: Mapped[int] = mapped_column(Integer, default=-1, server_default="-1")
    key: Mapped[str] = mapped_column(String(512))
    value: Mapped[Any] = mapped_column(JsonText, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)

    __table_args__ = (
        UniqueConstraint("task_instance_id", "key", name="uq_xcom_ti_key"),
        Index("idx_xcom_dag_run", "dag_id", "run_id"),
    )


class ImportError_(Base):
    __tablename__ = "import_error"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    filename: Mapped[str] = mapped_column(String(1000))
    traceback: Mapped[str] = mapped_column(LongText)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)


class Job(Base):
    """A running component (scheduler, dag processor, worker) and its heartbeat."""

    __tablename__ = "job"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    job_type: Mapped[str] = mapped_column(String(30))
    state: Mapped[str] = mapped_column(String(20))
    hostname: Mapped[str | None] = mapped_column(String(255))
    pid: Mapped[int | None] = mapped_column(Integer)
    version: Mapped[str | None] = mapped_column(String(50))
    start_date: Mapped[datetime] = mapped_column(UtcDateTime)
    end_date: Mapped[datetime | None] = mapped_column(UtcDateTime)
    latest_heartbeat: Mapped[datetime] = mapped_column(UtcDateTime)

    __table_args__ = (Index("idx_job_type_state", "job_type", "state", "latest_heartbeat"),)


class AuditLog(Base):
    __tablename__ = "audit_log"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    event: Mapped[str] = mapped_column(String(60))
    actor: Mapped[str | None] = mapped_column(String(255))
    dag_id: Mapped[str | None] = mapped_column(String(ID_LENGTH), index=True)
    run_id: Mapped[str | None] = mapped_column(String(ID_LENGTH))
    task_id: Mapped[str | None] = mapped_column(String(ID_LENGTH))
    extra: Mapped[Any] = mapped_column(JsonText, nullable=True)


class Pool(Base):
    __tablename__ = "pool"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    slots: Mapped[int] = mapped_column(Integer)
    description: Mapped[str | None] = mapped_column(String(500))


# -- webserver: users and API tokens ------------------------------------------
class User(Base):
    """A person who logs in to the webserver; ``role`` is admin, op or viewer."""

    __tablename__ = "web_user"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    username: Mapped[str] = mapped_column(String(100), unique=True)
    password_hash: Mapped[str] = mapped_column(String(255))
    role: Mapped[str] = mapped_column(String(20))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    last_login_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    # Part of every session cookie's key: raised at logout and password change,
    # so every cookie issued before (also one copied elsewhere) stops working.
    session_generation: Mapped[int] = mapped_column(Integer, default=0, server_default="0")


class ApiToken(Base):
    """A bearer token for the REST API; only its SHA-256 is stored, never the token."""

    __tablename__ = "api_token"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("web_user.id", ondelete="CASCADE"), index=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    description: Mapped[str | None] = mapped_column(String(255))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    last_used_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    expires_at: Mapped[datetime | None] = mapped_column(UtcDateTime)


class LoginFailure(Base):
    """A failed login, counted per user and per client address to throttle guessing.

    Rows older than ``webserver.login_failure_window`` no longer count and are
    deleted as new failures are written; the audit log keeps the history.
    """

    __tablename__ = "login_failure"
    __table_args__ = (
        Index("idx_login_failure_username", "username", "created_at"),
        Index("idx_login_failure_address", "address", "created_at"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    username: Mapped[str] = mapped_column(String(100))
    address: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)


# -- connections and variables (secret columns hold Fernet tokens) --------------
class ConnectionRecord(Base):
    """A stored :class:`flowsched.Connection`; ``password`` and ``extra`` are Fernet tokens."""

    __tablename__ = "connection"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    conn_id: Mapped[str] = mapped_column(String(ID_LENGTH), unique=True)
    conn_type: Mapped[str] = mapped_column(String(500))
    description: Mapped[str | None] = mapped_column(Text)
    host: Mapped[str | None] = mapped_column(String(500))
    schema: Mapped[str | None] = mapped_column(String(500))
    login: Mapped[str | None] = mapped_column(String(500))
    password: Mapped[str | None] = mapped_column(Text)
    port: Mapped[int | None] = mapped_column(Integer)
    extra: Mapped[str | None] = mapped_column(LongText)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime)


class VariableRecord(Base):
    """A stored :class:`flowsched.Variable`; ``val`` is a Fernet token."""

    __tablename__ = "variable"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    key: Mapped[str] = mapped_column(String(ID_LENGTH), unique=True)
    val: Mapped[str] = mapped_column(LongText)
    description: Mapped[str | None] = mapped_column(Text)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime)


# -- alerts ---------------------------------------------------------------------
class CallbackRequest(Base):
    """A callback the scheduler's side decided is due but must not run itself.

    Written by :mod:`flowsched.lifecycle` in the transaction of the transition
    (a run finishing, a zombie or killed try failing); taken and deleted by the
    callback runner (:mod:`flowsched.callback_runner`), which imports the DAG file.
    """

    __tablename__ = "callback_request"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    # dag_failure, dag_success, task_failure, task_retry
    callback_type: Mapped[str] = mapped_column(String(20))
    dag_id: Mapped[str] = mapped_column(String(ID_LENGTH))
    run_id: Mapped[str] = mapped_column(String(ID_LENGTH))
    task_id: Mapped[str | None] = mapped_column(String(ID_LENGTH))
    try_number: Mapped[int | None] = mapped_column(Integer)
    reason: Mapped[str | None] = mapped_column(Text)
    # Set while a runner works on it; a claim older than the callback timeout is stale.
    claimed_at: Mapped[datetime | None] = mapped_column(UtcDateTime)

    __table_args__ = (Index("idx_callback_request_claim", "claimed_at", "id"),)


# -- datasets (data-aware scheduling, as Airflow's) ---------------------------
# Dataset URIs are ASCII (checked when a DAG is parsed); latin1 on MySQL keeps a
# 3000-character URI within InnoDB's index length limit, as Airflow does.
DATASET_URI = String(3000).with_variant(String(3000, collation="latin1_general_cs"), "mysql")


class DatasetModel(Base):
    """A dataset some DAG produces or consumes; rows are kept when DAGs change."""

    __tablename__ = "dataset"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    uri: Mapped[str] = mapped_column(DATASET_URI)
    extra: Mapped[Any] = mapped_column(JsonText, default=dict)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime)

    __table_args__ = (UniqueConstraint("uri", name="uq_dataset_uri"),)


class DatasetEvent(Base):
    """One update of a dataset: a try of a task with it in ``outlets`` succeeded."""

    __tablename__ = "dataset_event"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    dataset_id: Mapped[int] = mapped_column(ForeignKey("dataset.id", ondelete="CASCADE"))
    extra: Mapped[Any] = mapped_column(JsonText, default=dict)
    source_dag_id: Mapped[str | None] = mapped_column(String(ID_LENGTH))
    source_task_id: Mapped[str | None] = mapped_column(String(ID_LENGTH))
    source_run_id: Mapped[str | None] = mapped_column(String(ID_LENGTH))
    source_try_number: Mapped[int | None] = mapped_column(Integer)
    timestamp: Mapped[datetime] = mapped_column(UtcDateTime)

    __table_args__ = (Index("idx_dataset_event_dataset_time", "dataset_id", "timestamp"),)


class DagScheduleDatasetReference(Base):
    """A DAG scheduled on a dataset (``schedule=[Dataset(...)]``); set by the DAG processor."""

    __tablename__ = "dag_schedule_dataset_reference"

    dataset_id: Mapped[int] = mapped_column(
        ForeignKey("dataset.id", ondelete="CASCADE"), primary_key=True
    )
    dag_id: Mapped[str] = mapped_column(String(ID_LENGTH), primary_key=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)

    # The DAG processor replaces a DAG's rows on every parse: by dag_id, not a scan.
    __table_args__ = (Index("idx_dag_schedule_dataset_dag", "dag_id"),)


class TaskOutletDatasetReference(Base):
    """A task that updates a dataset (``outlets=[Dataset(...)]``); set by the DAG processor."""

    __tablename__ = "task_outlet_dataset_reference"

    dataset_id: Mapped[int] = mapped_column(
        ForeignKey("dataset.id", ondelete="CASCADE"), primary_key=True
    )
    dag_id: Mapped[str] = mapped_column(String(ID_LENGTH), primary_key=True)
    task_id: Mapped[str] = mapped_column(String(ID_LENGTH), primary_key=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)

    __table_args__ = (Index("idx_task_outlet_dag_task", "dag_id", "task_id"),)


class DatasetDagRunQueue(Base):
    """A dataset updated since its consuming DAG's last dataset-triggered run.

    When every dataset a DAG is scheduled on has a row here, the scheduler
    creates the run and deletes the DAG's rows, in one transaction.
    """

    __tablename__ = "dataset_dag_run_queue"

    dataset_id: Mapped[int] = mapped_column(
        ForeignKey("dataset.id", ondelete="CASCADE"), primary_key=True
    )
    target_dag_id: Mapped[str] = mapped_column(String(ID_LENGTH), primary_key=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)

    __table_args__ = (Index("idx_dataset_dag_run_queue_dag", "target_dag_id"),)
