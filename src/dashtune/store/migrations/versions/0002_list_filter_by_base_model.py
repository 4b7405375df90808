# ruff: noqa
"""list filter by base model

The `model` filter of the job list matches `base_model` (§3.4); index it with the rank
so a filtered page is an index range scan.

Revision ID: 0002
Revises: 0001
"""

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.drop_index("ix_jobs_ws_model_rank")
        batch_op.create_index(
            "ix_jobs_ws_base_rank", ["workspace_id", "base_model", "rank"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.drop_index("ix_jobs_ws_base_rank")
        batch_op.create_index(
            "ix_jobs_ws_model_rank", ["workspace_id", "model", "rank"], unique=False
        )
