"""An index on schedule_fires.fire_time: the newest fire of any schedule (the System page's scheduler
lag) is read from it instead of a scan of every fire ever recorded.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-06
"""

from __future__ import annotations

from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

NAME = "ix_schedule_fires_fire_time"


def upgrade() -> None:
    op.create_index(NAME, "schedule_fires", ["fire_time"])


def downgrade() -> None:
    op.drop_index(NAME, table_name="schedule_fires")
