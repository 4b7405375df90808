# ruff: noqa
"""resume: attempts and paused_by on jobs

A lost worker re-queues its job to resume (up to DASHTUNE_MAX_ATTEMPTS worker runs);
a paused job remembers whether a user or a server shutdown paused it.

Revision ID: 0004
Revises: 0008
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("attempts", sa.Integer(), nullable=False, server_default="0"))
        batch_op.add_column(sa.Column("paused_by", sa.String(length=16), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.drop_column("paused_by")
        batch_op.drop_column("attempts")
