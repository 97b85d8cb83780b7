"""map_index on task instances, tries and XComs: dynamic task mapping

A mapped task expands into one task instance per item; Airflow's ``map_index``
(-1 for an unmapped task) becomes part of their identity, so the unique key of a
task instance grows from (run, task) to (run, task, map_index).

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-30
"""

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def _map_index() -> sa.Column:
    return sa.Column("map_index", sa.Integer(), nullable=False, server_default="-1")


def upgrade() -> None:
    with op.batch_alter_table("task_instance") as batch:
        batch.add_column(_map_index())
        # The new key first: MySQL keeps an index on dag_run_id for its foreign key.
        batch.create_unique_constraint("uq_ti_run_task_map", ["dag_run_id", "task_id", "map_index"])
        batch.drop_constraint("uq_ti_run_task", type_="unique")
    with op.batch_alter_table("task_try") as batch:
        batch.add_column(_map_index())
    with op.batch_alter_table("xcom") as batch:
        batch.add_column(_map_index())


def downgrade() -> None:
    with op.batch_alter_table("xcom") as batch:
        batch.drop_column("map_index")
    with op.batch_alter_table("task_try") as batch:
        batch.drop_column("map_index")
    op.execute("DELETE FROM task_instance WHERE map_index > 0")
    with op.batch_alter_table("task_instance") as batch:
        batch.create_unique_constraint("uq_ti_run_task", ["dag_run_id", "task_id"])
        batch.drop_constraint("uq_ti_run_task_map", type_="unique")
        batch.drop_column("map_index")
