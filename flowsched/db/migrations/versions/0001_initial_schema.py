"""initial schema

Revision ID: 0001
Revises:
Create Date: 2026-11-24
"""

import sqlalchemy as sa
from alembic import op

import flowsched.db.types

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "audit_log",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("created_at", flowsched.db.types.UtcDateTime(), nullable=False),
        sa.Column("event", sa.String(length=60), nullable=False),
        sa.Column("actor", sa.String(length=255), nullable=True),
        sa.Column("dag_id", sa.String(length=250), nullable=True),
        sa.Column("run_id", sa.String(length=250), nullable=True),
        sa.Column("task_id", sa.String(length=250), nullable=True),
        sa.Column("extra", flowsched.db.types.JsonText(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(op.f("ix_audit_log_dag_id"), "audit_log", ["dag_id"], unique=False)
    op.create_table(
        "dag",
        sa.Column("dag_id", sa.String(length=250), nullable=False),
        sa.Column("fileloc", sa.String(length=1000), nullable=False),
        sa.Column("is_paused", sa.Boolean(), nullable=False),
        sa.Column("is_active", sa.Boolean(), nullable=False),
        sa.Column("description", sa.String(length=2000), nullable=True),
        sa.Column("schedule", sa.String(length=200), nullable=True),
        sa.Column("timezone", sa.String(length=100), nullable=False),
        sa.Column("tags", flowsched.db.types.JsonText(), nullable=False),
        sa.Column("max_active_runs", sa.Integer(), nullable=False),
        sa.Column("latest_version_id", sa.Integer(), nullable=True),
        sa.Column("next_data_interval_start", flowsched.db.types.UtcDateTime(), nullable=True),
        sa.Column("next_data_interval_end", flowsched.db.types.UtcDateTime(), nullable=True),
        sa.Column("next_run_create_after", flowsched.db.types.UtcDateTime(), nullable=True),
        sa.Column("last_parsed_at", flowsched.db.types.UtcDateTime(), nullable=True),
        sa.PrimaryKeyConstraint("dag_id"),
    )
    op.create_index(
        "idx_dag_next_run", "dag", ["is_paused", "is_active", "next_run_create_after"], unique=False
    )
    op.create_table(
        "dag_run",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("dag_id", sa.String(length=250), nullable=False),
        sa.Column("run_id", sa.String(length=250), nullable=False),
        sa.Column("run_type", sa.String(length=20), nullable=False),
        sa.Column("state", sa.String(length=20), nullable=False),
        sa.Column("logical_date", flowsched.db.types.UtcDateTime(), nullable=False),
        sa.Column("data_interval_start", flowsched.db.types.UtcDateTime(), nullable=True),
        sa.Column("data_interval_end", flowsched.db.types.UtcDateTime(), nullable=True),
        sa.Column("conf", flowsched.db.types.JsonText(), nullable=True),
        sa.Column("dag_version_id", sa.Integer(), nullable=True),
        sa.Column("created_at", flowsched.db.types.UtcDateTime(), nullable=False),
        sa.Column("start_date", flowsched.db.types.UtcDateTime(), nullable=True),
        sa.Column("end_date", flowsched.db.types.UtcDateTime(), nullable=True),
        sa.Column("last_scheduling_decision", flowsched.db.types.UtcDateTime(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("dag_id", "run_id", name="uq_dag_run_id"),
    )
    op.create_index("idx_dag_run_dag_logical", "dag_run", ["dag_id", "logical_date"], unique=False)
    op.create_index("idx_dag_run_state", "dag_run", ["state", "dag_id"], unique=False)
    op.create_table(
        "dag_version",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("dag_id", sa.String(length=250), nullable=False),
        sa.Column("version_number", sa.Integer(), nullable=False),
        sa.Column("fingerprint", sa.String(length=64), nullable=False),
        sa.Column("fileloc", sa.String(length=1000), nullable=False),
        sa.Column("source", flowsched.db.types.LongText(), nullable=False),
        sa.Column("serialized", flowsched.db.types.JsonText(), nullable=False),
        sa.Column("created_at", flowsched.db.types.UtcDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("dag_id", "version_number", name="uq_dag_version_number"),
    )
    op.create_index(op.f("ix_dag_version_dag_id"), "dag_version", ["dag_id"], unique=False)
    op.create_table(
        "import_error",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("filename", sa.String(length=1000), nullable=False),
        sa.Column("traceback", flowsched.db.types.LongText(), nullable=False),
        sa.Column("created_at", flowsched.db.types.UtcDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_table(
        "job",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("job_type", sa.String(length=30), nullable=False),
        sa.Column("state", sa.String(length=20), nullable=False),
        sa.Column("hostname", sa.String(length=255), nullable=True),
        sa.Column("pid", sa.Integer(), nullable=True),
        sa.Column("version", sa.String(length=50), nullable=True),
        sa.Column("start_date", flowsched.db.types.UtcDateTime(), nullable=False),
        sa.Column("end_date", flowsched.db.types.UtcDateTime(), nullable=True),
        sa.Column("latest_heartbeat", flowsched.db.types.UtcDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(
        "idx_job_type_state", "job", ["job_type", "state", "latest_heartbeat"], unique=False
    )
    op.create_table(
        "pool",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("slots", sa.Integer(), nullable=False),
        sa.Column("description", sa.String(length=500), nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("name"),
    )
    op.create_table(
        "task_instance",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("dag_run_id", sa.Integer(), nullable=False),
        sa.Column("dag_id", sa.String(length=250), nullable=False),
        sa.Column("run_id", sa.String(length=250), nullable=False),
        sa.Column("task_id", sa.String(length=250), nullable=False),
        sa.Column("state", sa.String(length=20), nullable=False),
        sa.Column("try_number", sa.Integer(), nullable=False),
        sa.Column("max_tries", sa.Integer(), nullable=False),
        sa.Column("operator", sa.String(length=100), nullable=True),
        sa.Column("queue", sa.String(length=100), nullable=True),
        sa.Column("pool", sa.String(length=100), nullable=False),
        sa.Column("priority_weight", sa.Integer(), nullable=False),
        sa.Column("hostname", sa.String(length=255), nullable=True),
        sa.Column("worker_nodename", sa.String(length=255), nullable=True),
        sa.Column("pid", sa.Integer(), nullable=True),
        sa.Column("fingerprint", sa.String(length=64), nullable=True),
        sa.Column("dag_version_id", sa.Integer(), nullable=True),
        sa.Column("queued_by_job_id", sa.Integer(), nullable=True),
        sa.Column("scheduled_at", flowsched.db.types.UtcDateTime(), nullable=True),
        sa.Column("queued_at", flowsched.db.types.UtcDateTime(), nullable=True),
        sa.Column("start_date", flowsched.db.types.UtcDateTime(), nullable=True),
        sa.Column("end_date", flowsched.db.types.UtcDateTime(), nullable=True),
        sa.Column("duration", sa.Float(), nullable=True),
        sa.Column("next_retry_at", flowsched.db.types.UtcDateTime(), nullable=True),
        sa.Column("last_heartbeat", flowsched.db.types.UtcDateTime(), nullable=True),
        sa.ForeignKeyConstraint(["dag_run_id"], ["dag_run.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("dag_run_id", "task_id", name="uq_ti_run_task"),
    )
    op.create_index("idx_ti_dag_task", "task_instance", ["dag_id", "task_id"], unique=False)
    op.create_index("idx_ti_state", "task_instance", ["state", "pool"], unique=False)
    op.create_table(
        "task_try",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("task_instance_id", sa.Integer(), nullable=False),
        sa.Column("dag_id", sa.String(length=250), nullable=False),
        sa.Column("run_id", sa.String(length=250), nullable=False),
        sa.Column("task_id", sa.String(length=250), nullable=False),
        sa.Column("try_number", sa.Integer(), nullable=False),
        sa.Column("state", sa.String(length=20), nullable=False),
        sa.Column("hostname", sa.String(length=255), nullable=True),
        sa.Column("worker_nodename", sa.String(length=255), nullable=True),
        sa.Column("pid", sa.Integer(), nullable=True),
        sa.Column("fingerprint", sa.String(length=64), nullable=True),
        sa.Column("dag_version_id", sa.Integer(), nullable=True),
        sa.Column("queued_at", flowsched.db.types.UtcDateTime(), nullable=True),
        sa.Column("start_date", flowsched.db.types.UtcDateTime(), nullable=True),
        sa.Column("end_date", flowsched.db.types.UtcDateTime(), nullable=True),
        sa.Column("duration", sa.Float(), nullable=True),
        sa.Column("error", flowsched.db.types.LongText(), nullable=True),
        sa.Column("rendered_fields", flowsched.db.types.JsonText(), nullable=True),
        sa.ForeignKeyConstraint(["task_instance_id"], ["task_instance.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("task_instance_id", "try_number", name="uq_try_ti_number"),
    )
    op.create_index("idx_try_dag", "task_try", ["dag_id", "run_id", "task_id"], unique=False)
    op.create_table(
        "xcom",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("task_instance_id", sa.Integer(), nullable=False),
        sa.Column("dag_id", sa.String(length=250), nullable=False),
        sa.Column("run_id", sa.String(length=250), nullable=False),
        sa.Column("task_id", sa.String(length=250), nullable=False),
        sa.Column("key", sa.String(length=512), nullable=False),
        sa.Column("value", flowsched.db.types.JsonText(), nullable=True),
        sa.Column("created_at", flowsched.db.types.UtcDateTime(), nullable=False),
        sa.ForeignKeyConstraint(["task_instance_id"], ["task_instance.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("task_instance_id", "key", name="uq_xcom_ti_key"),
    )
    op.create_index("idx_xcom_dag_run", "xcom", ["dag_id", "run_id"], unique=False)


def downgrade() -> None:
    op.drop_index("idx_xcom_dag_run", table_name="xcom")
    op.drop_table("xcom")
    op.drop_index("idx_try_dag", table_name="task_try")
    op.drop_table("task_try")
    op.drop_index("idx_ti_state", table_name="task_instance")
    op.drop_index("idx_ti_dag_task", table_name="task_instance")
    op.drop_table("task_instance")
    op.drop_table("pool")
    op.drop_index("idx_job_type_state", table_name="job")
    op.drop_table("job")
    op.drop_table("import_error")
    op.drop_index(op.f("ix_dag_version_dag_id"), table_name="dag_version")
    op.drop_table("dag_version")
    op.drop_index("idx_dag_run_state", table_name="dag_run")
    op.drop_index("idx_dag_run_dag_logical", table_name="dag_run")
    op.drop_table("dag_run")
    op.drop_index("idx_dag_next_run", table_name="dag")
    op.drop_table("dag")
    op.drop_index(op.f("ix_audit_log_dag_id"), table_name="audit_log")
    op.drop_table("audit_log")
