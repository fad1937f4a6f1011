"""The dashboard's counts from an index: (created_at, state, pipeline, started_at, finished_at).

It replaces the index on created_at alone (its first column, so whatever used that one uses
this one): the counts by hour and state and the durations per pipeline read only the index,
never the runs' rows with their specs and inputs.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-06
"""

from __future__ import annotations

from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

NAME = "ix_runs_created_at_state_pipeline_started_at_finished_at"


def upgrade() -> None:
    op.create_index(NAME, "runs", ["created_at", "state", "pipeline", "started_at", "finished_at"])
    op.drop_index("ix_runs_created_at", table_name="runs")


def downgrade() -> None:
    op.create_index("ix_runs_created_at", "runs", ["created_at"])
    op.drop_index(NAME, table_name="runs")
