"""datasets: dataset, dataset_event, schedule/outlet references, dataset_dag_run_queue

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-30
"""

import sqlalchemy as sa
from alembic import op

import flowsched.db.types

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

URI = sa.String(length=3000).with_variant(
    sa.String(length=3000, collation="latin1_general_cs"), "mysql"
)


def _time(name: str) -> sa.Column:
    return sa.Column(name, flowsched.db.types.UtcDateTime(), nullable=False)


def upgrade() -> None:
    op.create_table(
        "dataset",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("uri", URI, nullable=False),
        sa.Column("extra", flowsched.db.types.JsonText(), nullable=False),
        _time("created_at"),
        _time("updated_at"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("uri", name="uq_dataset_uri"),
    )
    op.create_table(
        "dataset_event",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("dataset_id", sa.Integer(), nullable=False),
        sa.Column("extra", flowsched.db.types.JsonText(), nullable=False),
        sa.Column("source_dag_id", sa.String(length=250), nullable=True),
        sa.Column("source_task_id", sa.String(length=250), nullable=True),
        sa.Column("source_run_id", sa.String(length=250), nullable=True),
        sa.Column("source_try_number", sa.Integer(), nullable=True),
        _time("timestamp"),
        sa.ForeignKeyConstraint(["dataset_id"], ["dataset.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("idx_dataset_event_dataset_time", "dataset_event", ["dataset_id", "timestamp"])
    op.create_table(
        "dag_schedule_dataset_reference",
        sa.Column("dataset_id", sa.Integer(), nullable=False),
        sa.Column("dag_id", sa.String(length=250), nullable=False),
        _time("created_at"),
        sa.ForeignKeyConstraint(["dataset_id"], ["dataset.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("dataset_id", "dag_id"),
    )
    op.create_index("idx_dag_schedule_dataset_dag", "dag_schedule_dataset_reference", ["dag_id"])
    op.create_table(
        "task_outlet_dataset_reference",
        sa.Column("dataset_id", sa.Integer(), nullable=False),
        sa.Column("dag_id", sa.String(length=250), nullable=False),
        sa.Column("task_id", sa.String(length=250), nullable=False),
        _time("created_at"),
        sa.ForeignKeyConstraint(["dataset_id"], ["dataset.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("dataset_id", "dag_id", "task_id"),
    )
    op.create_index(
        "idx_task_outlet_dag_task", "task_outlet_dataset_reference", ["dag_id", "task_id"]
    )
    op.create_table(
        "dataset_dag_run_queue",
        sa.Column("dataset_id", sa.Integer(), nullable=False),
        sa.Column("target_dag_id", sa.String(length=250), nullable=False),
        _time("created_at"),
        sa.ForeignKeyConstraint(["dataset_id"], ["dataset.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("dataset_id", "target_dag_id"),
    )
    op.create_index("idx_dataset_dag_run_queue_dag", "dataset_dag_run_queue", ["target_dag_id"])


def downgrade() -> None:
    op.drop_index("idx_dataset_dag_run_queue_dag", table_name="dataset_dag_run_queue")
    op.drop_table("dataset_dag_run_queue")
    op.drop_index("idx_task_outlet_dag_task", table_name="task_outlet_dataset_reference")
    op.drop_table("task_outlet_dataset_reference")
    op.drop_index("idx_dag_schedule_dataset_dag", table_name="dag_schedule_dataset_reference")
    op.drop_table("dag_schedule_dataset_reference")
    op.drop_index("idx_dataset_event_dataset_time", table_name="dataset_event")
    op.drop_table("dataset_event")
    op.drop_table("dataset")
