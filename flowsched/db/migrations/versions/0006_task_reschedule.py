"""task_reschedule (sensors in reschedule mode) and dag_run.triggered_by_* (TriggerDagRunOperator)

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-30
"""

import sqlalchemy as sa
from alembic import op

import flowsched.db.types

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "task_reschedule",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("task_instance_id", sa.Integer(), nullable=False),
        sa.Column("dag_id", sa.String(length=250), nullable=False),
        sa.Column("run_id", sa.String(length=250), nullable=False),
        sa.Column("task_id", sa.String(length=250), nullable=False),
        sa.Column("try_number", sa.Integer(), nullable=False),
        sa.Column("start_date", flowsched.db.types.UtcDateTime(), nullable=False),
        sa.Column("end_date", flowsched.db.types.UtcDateTime(), nullable=False),
        sa.Column("duration", sa.Float(), nullable=True),
        sa.Column("reschedule_date", flowsched.db.types.UtcDateTime(), nullable=False),
        sa.ForeignKeyConstraint(["task_instance_id"], ["task_instance.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(
        "idx_task_reschedule_ti_try", "task_reschedule", ["task_instance_id", "try_number"]
    )
    op.create_index("idx_task_reschedule_dag", "task_reschedule", ["dag_id", "run_id", "task_id"])
    with op.batch_alter_table("dag_run") as batch:
        batch.add_column(sa.Column("triggered_by_dag_id", sa.String(length=250), nullable=True))
        batch.add_column(sa.Column("triggered_by_run_id", sa.String(length=250), nullable=True))
        batch.add_column(sa.Column("triggered_by_task_id", sa.String(length=250), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("dag_run") as batch:
        batch.drop_column("triggered_by_task_id")
        batch.drop_column("triggered_by_run_id")
        batch.drop_column("triggered_by_dag_id")
    op.drop_index("idx_task_reschedule_dag", table_name="task_reschedule")
    op.drop_index("idx_task_reschedule_ti_try", table_name="task_reschedule")
    op.drop_table("task_reschedule")
