"""Claiming queued runs: the one query where several server replicas compete.

PostgreSQL: candidates are locked with ``FOR UPDATE SKIP LOCKED`` (two dispatchers never see
the same queued run), then every pipeline with a ``max_instances`` among them is serialised
with a transaction-scoped advisory lock, taken in a fixed order, before its running runs are
counted. Under READ COMMITTED that count sees every claim committed before the lock was ours,
so the cap holds across replicas. SQLite has one writer at a time, so the same steps are safe
there without the locks.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib

import sqlalchemy as sa

from kubeline.domain import states
from kubeline.storage.sql import tables

# Look past runs held back by max_instances, so one busy pipeline does not starve the others.
WINDOW_FACTOR = 4
MIN_WINDOW = 100


@dataclasses.dataclass(frozen=True, kw_only=True)
class _Candidate:
    id: str
    pipeline: str
    max_instances: int | None


def advisory_key(pipeline: str) -> int:
    """A stable signed 64-bit lock key for one pipeline's claims."""
    digest = hashlib.blake2b(f"kubeline.claim:{pipeline}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


def claim(
    conn: sa.Connection, *, limit: int, only: list[str] | None, now: dt.datetime
) -> list[str]:
    """Move up to ``limit`` queued runs to running (oldest first) and return their ids.

    The caller owns the transaction and writes the events.
    """
    if limit <= 0 or only == []:
        return []
    runs = tables.runs
    query = (
        sa.select(runs.c.id, runs.c.pipeline, runs.c.max_instances)
        .where(runs.c.state == states.RunState.QUEUED.value)
        .order_by(runs.c.id)
        .limit(max(limit * WINDOW_FACTOR, MIN_WINDOW))
    )
    if only is not None:
        query = query.where(runs.c.id.in_(only))
    postgres = conn.dialect.name == "postgresql"
    if postgres:
        query = query.with_for_update(skip_locked=True)
    candidates = [
        _Candidate(id=r.id, pipeline=r.pipeline, max_instances=r.max_instances)
        for r in conn.execute(query)
    ]
    capped = sorted({c.pipeline for c in candidates if c.max_instances is not None})
    if postgres:
        for key in sorted(advisory_key(p) for p in capped):
            conn.execute(sa.select(sa.func.pg_advisory_xact_lock(key)))
    running = _running_counts(conn, capped)
    chosen: list[str] = []
    for c in candidates:
        if len(chosen) >= limit:
            break
        if c.max_instances is not None and running.get(c.pipeline, 0) >= c.max_instances:
            continue
        states.check(states.RunState.QUEUED, states.RunState.RUNNING, what=f"run {c.id}")
        running[c.pipeline] = running.get(c.pipeline, 0) + 1
        chosen.append(c.id)
    if chosen:
        conn.execute(
            sa.update(runs)
            .where(runs.c.id.in_(chosen))
            .values(state=states.RunState.RUNNING.value, started_at=now)
        )
    return chosen


def _running_counts(conn: sa.Connection, pipelines: list[str]) -> dict[str, int]:
    if not pipelines:
        return {}
    runs = tables.runs
    rows = conn.execute(
        sa.select(runs.c.pipeline, sa.func.count())
        .where(runs.c.state == states.RunState.RUNNING.value, runs.c.pipeline.in_(pipelines))
        .group_by(runs.c.pipeline)
    )
    return {pipeline: int(count) for pipeline, count in rows}
