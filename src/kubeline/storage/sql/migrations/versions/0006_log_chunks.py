"""Logs in an object store: the index of chunks and the per-attempt upload state.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-05
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "log_chunks",
        sa.Column("run_id", sa.String(32), nullable=False),
        sa.Column("stage_id", sa.String(128), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("object_key", sa.String(1024), nullable=False),
        sa.Column("byte_start", sa.BigInteger(), nullable=False),
        sa.Column("byte_count", sa.BigInteger(), nullable=False),
        sa.Column("line_start", sa.BigInteger(), nullable=False),
        sa.Column("line_count", sa.Integer(), nullable=False),
        sa.Column("first_at", TS, nullable=False),
        sa.Column("last_at", TS, nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.PrimaryKeyConstraint("run_id", "stage_id", "attempt", "seq", name="pk_log_chunks"),
    )
    op.create_table(
        "log_streams",
        sa.Column("run_id", sa.String(32), nullable=False),
        sa.Column("stage_id", sa.String(128), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("writer", sa.String(255), nullable=False),
        sa.Column("delayed_since", TS, nullable=True),
        sa.Column("delay_reason", sa.Text(), server_default="", nullable=False),
        sa.Column("closed", sa.Boolean(), server_default=sa.false(), nullable=False),
        sa.Column("updated_at", TS, nullable=False),
        sa.PrimaryKeyConstraint("run_id", "stage_id", "attempt", name="pk_log_streams"),
    )


def downgrade() -> None:
    op.drop_table("log_streams")
    op.drop_table("log_chunks")
