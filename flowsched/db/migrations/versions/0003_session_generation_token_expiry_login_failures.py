"""sessions ended at logout, API token expiry, login throttling

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-30
"""

import sqlalchemy as sa
from alembic import op

import flowsched.db.types

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("web_user") as batch:
        batch.add_column(
            sa.Column("session_generation", sa.Integer(), server_default="0", nullable=False)
        )
    with op.batch_alter_table("api_token") as batch:
        batch.add_column(sa.Column("expires_at", flowsched.db.types.UtcDateTime(), nullable=True))
    op.create_table(
        "login_failure",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("username", sa.String(length=100), nullable=False),
        sa.Column("address", sa.String(length=64), nullable=False),
        sa.Column("created_at", flowsched.db.types.UtcDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(
        "idx_login_failure_username", "login_failure", ["username", "created_at"], unique=False
    )
    op.create_index(
        "idx_login_failure_address", "login_failure", ["address", "created_at"], unique=False
    )


def downgrade() -> None:
    op.drop_index("idx_login_failure_address", table_name="login_failure")
    op.drop_index("idx_login_failure_username", table_name="login_failure")
    op.drop_table("login_failure")
    with op.batch_alter_table("api_token") as batch:
        batch.drop_column("expires_at")
    with op.batch_alter_table("web_user") as batch:
        batch.drop_column("session_generation")
