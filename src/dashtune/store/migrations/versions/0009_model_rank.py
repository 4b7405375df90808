# ruff: noqa
"""model_rank: the model=-filtered job list paged on an index range

`model_rank` numbers a workspace's jobs of one base model 1..n without gaps (as `rank`
does for all its jobs), and `model_job_counts` holds n: a filtered page is a range of
(workspace_id, base_model, model_rank) and its total one row, whatever the page number
(it was OFFSET over the index plus a COUNT of every matching job).

Revision ID: 0009
Revises: 0004
"""

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "model_job_counts",
        sa.Column("workspace_id", sa.String(length=64), nullable=False),
        sa.Column("base_model", sa.String(length=300), nullable=False),
        sa.Column("job_count", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("workspace_id", "base_model"),
    )
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("model_rank", sa.Integer(), nullable=False, server_default="0")
        )
    # Correlated count on the (workspace_id, base_model, rank) index: portable SQL.
    op.execute(
        "UPDATE jobs SET model_rank = (SELECT COUNT(*) FROM jobs AS j2 "
        "WHERE j2.workspace_id = jobs.workspace_id AND j2.base_model = jobs.base_model "
        "AND j2.rank <= jobs.rank)"
    )
    op.execute(
        "INSERT INTO model_job_counts (workspace_id, base_model, job_count) "
        "SELECT workspace_id, base_model, COUNT(*) FROM jobs GROUP BY workspace_id, base_model"
    )
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.drop_index("ix_jobs_ws_base_rank")
        batch_op.create_index(
            "ix_jobs_ws_base_model_rank", ["workspace_id", "base_model", "model_rank"]
        )


def downgrade() -> None:
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.drop_index("ix_jobs_ws_base_model_rank")
        batch_op.create_index("ix_jobs_ws_base_rank", ["workspace_id", "base_model", "rank"])
        batch_op.drop_column("model_rank")
    op.drop_table("model_job_counts")
