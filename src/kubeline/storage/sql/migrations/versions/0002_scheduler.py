"""Scheduler and replicas: run leases and executor, schedule states, webhook deliveries.

Revision ID: 0002
Revises: 0001
Create Date: 2025-01-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    with op.batch_alter_table("runs") as batch:
        batch.add_column(sa.Column("owner", sa.String(128), nullable=True))
        batch.add_column(sa.Column("lease_expires_at", TS, nullable=True))
        batch.add_column(sa.Column("executor", sa.String(32), nullable=True))
    op.create_table(
        "schedule_states",
        sa.Column("schedule_key", sa.String(255), nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=True),
        sa.Column("since", TS, nullable=False),
        sa.Column("updated_at", TS, nullable=False),
        sa.PrimaryKeyConstraint("schedule_key", name="pk_schedule_states"),
    )
    op.create_table(
        "webhook_deliveries",
        sa.Column("hook_key", sa.String(255), nullable=False),
        sa.Column("delivery_id", sa.String(255), nullable=False),
        sa.Column("received_at", TS, nullable=False),
        sa.PrimaryKeyConstraint("hook_key", "delivery_id", name="pk_webhook_deliveries"),
    )
    op.create_index(
        "ix_webhook_deliveries_hook_key_received_at", "webhook_deliveries", ["hook_key", "received_at"]
    )


def downgrade() -> None:
    op.drop_index("ix_webhook_deliveries_hook_key_received_at", table_name="webhook_deliveries")
    op.drop_table("webhook_deliveries")
    op.drop_table("schedule_states")
    with op.batch_alter_table("runs") as batch:
        batch.drop_column("executor")
        batch.drop_column("lease_expires_at")
        batch.drop_column("owner")
