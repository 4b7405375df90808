# ruff: noqa
"""job total steps

The trainer's real step count (its `max_steps`), so progress shows `step / total` as the
trainer counts it instead of a total derived from the progress fraction.

Revision ID: 0007
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("total_steps", sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.drop_column("total_steps")
