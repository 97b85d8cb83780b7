"""callback_request: run-level and zombie callbacks, run by the callback runner

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-30
"""

import sqlalchemy as sa
from alembic import op

import flowsched.db.types

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "callback_request",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("created_at", flowsched.db.types.UtcDateTime(), nullable=False),
        sa.Column("callback_type", sa.String(length=20), nullable=False),
        sa.Column("dag_id", sa.String(length=250), nullable=False),
        sa.Column("run_id", sa.String(length=250), nullable=False),
        sa.Column("task_id", sa.String(length=250), nullable=True),
        sa.Column("try_number", sa.Integer(), nullable=True),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("claimed_at", flowsched.db.types.UtcDateTime(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("idx_callback_request_claim", "callback_request", ["claimed_at", "id"])


def downgrade() -> None:
    op.drop_index("idx_callback_request_claim", table_name="callback_request")
    op.drop_table("callback_request")
