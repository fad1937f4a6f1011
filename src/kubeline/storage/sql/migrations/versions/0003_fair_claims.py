"""Fair claims and fencing: an index to rank queued runs per pipeline, the executor stored at
creation (backfilled for queued runs), and the lease generation of each run.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-05
"""

from __future__ import annotations

import json
from typing import Any

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("runs") as batch:
        batch.add_column(sa.Column("lease_generation", sa.Integer(), nullable=False, server_default="0"))
    op.create_index("ix_runs_state_pipeline_id_max_instances_executor", "runs",
                    ["state", "pipeline", "id", "max_instances", "executor"])
    runs = sa.table("runs", sa.column("id", sa.String), sa.column("state", sa.String),
                    sa.column("spec", sa.JSON), sa.column("executor", sa.String))
    conn = op.get_bind()
    queued = conn.execute(sa.select(runs.c.id, runs.c.spec).where(runs.c.state == "queued",
                                                                  runs.c.executor.is_(None))).all()
    for run_id, spec in queued:
        executor = _executor(spec)
        if executor is not None:
            conn.execute(sa.update(runs).where(runs.c.id == run_id).values(executor=executor))


def _executor(spec: Any) -> str | None:
    if isinstance(spec, str):
        spec = json.loads(spec)
    executor = spec.get("executor") if isinstance(spec, dict) else None
    return None if executor is None else str(executor)


def downgrade() -> None:
    op.drop_index("ix_runs_state_pipeline_id_max_instances_executor", table_name="runs")
    with op.batch_alter_table("runs") as batch:
        batch.drop_column("lease_generation")
