"""A partial index of the queued runs, ``(pipeline, id) WHERE state = 'queued'``, for the claim.

The claim's probes (each pipeline's oldest queued run, its next ones) read it instead of an index
of every run filtered by state. The planner chose those by the statistics, and right after a bulk
submission (ANALYZE by hand or by autovacuum) they say every run is queued: the probes then read
every run drained since, ~6,000 rows and ~20 ms a claim after 6,000 of 10,000 queued runs.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

NAME = "ix_runs_queued"


def upgrade() -> None:
    queued = sa.text("state = 'queued'")
    op.create_index(NAME, "runs", ["pipeline", "id"], postgresql_where=queued, sqlite_where=queued)


def downgrade() -> None:
    op.drop_index(NAME, table_name="runs")
