# ruff: noqa
"""cluster: job placement and owner, scheduler leases

`jobs.placement` says where a job's workers run (executor, nodes, devices); `jobs.
scheduler_id` which scheduler launched it. Each scheduler renews a row in `schedulers`;
one whose lease expired has its live jobs re-attached by another.

Revision ID: 0005
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("placement", sa.JSON(), nullable=True))
        batch_op.add_column(sa.Column("scheduler_id", sa.String(length=100), nullable=True))
    op.create_table(
        "schedulers",
        sa.Column("id", sa.String(length=100), primary_key=True),
        sa.Column("host", sa.String(length=200), nullable=False),
        sa.Column("executor", sa.String(length=16), nullable=False),
        sa.Column("inventory", sa.JSON(), nullable=False),
        sa.Column("started_at", sa.DateTime(), nullable=False),
        sa.Column("heartbeat_at", sa.DateTime(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("schedulers")
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.drop_column("scheduler_id")
        batch_op.drop_column("placement")
