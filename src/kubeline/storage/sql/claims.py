"""Claiming queued runs: the one query where several server replicas compete.

PostgreSQL: candidates are locked with ``FOR UPDATE SKIP LOCKED`` (two dispatchers never see
the same queued run), then every pipeline with a ``max_instances`` among them is serialised
with a transaction-scoped advisory lock, taken in a fixed order, before its running runs are
counted. Under READ COMMITTED that count sees every claim committed before the lock was ours,
so the cap holds across replicas. The global and per-executor caps (``ClaimCaps``) take one more
advisory lock, so they hold the same way. SQLite has one writer at a time, so the same steps are
safe there without the locks.

Leases: a claim with a ``Lease`` stamps its owner and expiry on the runs; ``adopt`` takes running
runs whose lease expired (their process died) with ``SKIP LOCKED``, so one process adopts each.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
from typing import Any

import sqlalchemy as sa

from kubeline.domain import states
from kubeline.storage import base
from kubeline.storage.sql import tables

# Look past runs held back by max_instances, so one busy pipeline does not starve the others.
WINDOW_FACTOR = 4
MIN_WINDOW = 100


@dataclasses.dataclass(frozen=True, kw_only=True)
class _Candidate:
    id: str
    pipeline: str
    max_instances: int | None
    executor: str


def advisory_key(pipeline: str) -> int:
    """A stable signed 64-bit lock key for one pipeline's claims."""
    digest = hashlib.blake2b(f"kubeline.claim:{pipeline}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


GLOBAL_KEY = advisory_key("*all*")


def _executor_of(spec: Any, default: str) -> str:
    executor = spec.get("executor") if isinstance(spec, dict) else None
    return str(executor or default)


def claim(
    conn: sa.Connection, *, limit: int, only: list[str] | None, now: dt.datetime,
    lease: base.Lease | None = None, caps: base.ClaimCaps | None = None,
) -> list[str]:
    """Move up to ``limit`` queued runs to running (oldest first) and return their ids.

    The caller owns the transaction and writes the events.
    """
    if limit <= 0 or only == []:
        return []
    caps = caps or base.ClaimCaps()
    runs = tables.runs
    columns: list[Any] = [runs.c.id, runs.c.pipeline, runs.c.max_instances]
    if caps.per_executor:
        columns.append(runs.c.spec)
    query = (
        sa.select(*columns)
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
        _Candidate(id=r.id, pipeline=r.pipeline, max_instances=r.max_instances,
                   executor=_executor_of(r.spec if caps.per_executor else None, caps.default_executor))
        for r in conn.execute(query)
    ]
    capped = sorted({c.pipeline for c in candidates if c.max_instances is not None})
    global_caps = caps.max_running is not None or bool(caps.per_executor)
    if postgres:
        keys = sorted({advisory_key(p) for p in capped} | ({GLOBAL_KEY} if global_caps else set()))
        for key in keys:
            conn.execute(sa.select(sa.func.pg_advisory_xact_lock(key)))
    running = _running_counts(conn, capped)
    total, per_executor = _global_counts(conn) if global_caps and candidates else (0, {})
    chosen = _choose(candidates, limit=limit, caps=caps, running=running, total=total,
                     per_executor=per_executor)
    values: dict[str, Any] = {"state": states.RunState.RUNNING.value, "started_at": now}
    if lease is not None:
        values.update(owner=lease.owner, lease_expires_at=lease.until)
    by_executor: dict[str, list[str]] = {}
    for run_id, executor in chosen.items():
        by_executor.setdefault(executor, []).append(run_id)
    for executor, ids in by_executor.items():
        conn.execute(sa.update(runs).where(runs.c.id.in_(ids)).values(executor=executor, **values))
    return list(chosen)


def _choose(
    candidates: list[_Candidate], *, limit: int, caps: base.ClaimCaps, running: dict[str, int],
    total: int, per_executor: dict[str, int],
) -> dict[str, str]:
    """Run id -> executor of the candidates that fit every cap, oldest first."""
    chosen: dict[str, str] = {}
    for c in candidates:
        if len(chosen) >= limit or (caps.max_running is not None and total >= caps.max_running):
            break
        if c.max_instances is not None and running.get(c.pipeline, 0) >= c.max_instances:
            continue
        executor_cap = caps.per_executor.get(c.executor)
        if executor_cap is not None and per_executor.get(c.executor, 0) >= executor_cap:
            continue
        states.check(states.RunState.QUEUED, states.RunState.RUNNING, what=f"run {c.id}")
        running[c.pipeline] = running.get(c.pipeline, 0) + 1
        per_executor[c.executor] = per_executor.get(c.executor, 0) + 1
        total += 1
        chosen[c.id] = c.executor
    return chosen


def _global_counts(conn: sa.Connection) -> tuple[int, dict[str, int]]:
    runs = tables.runs
    rows = conn.execute(
        sa.select(runs.c.executor, sa.func.count())
        .where(runs.c.state == states.RunState.RUNNING.value)
        .group_by(runs.c.executor)
    )
    counts = {str(executor): int(count) for executor, count in rows}
    return sum(counts.values()), counts


def adopt(
    conn: sa.Connection, *, lease: base.Lease, limit: int, now: dt.datetime, only: list[str] | None = None
) -> list[str]:
    """Give ``lease`` to up to ``limit`` running runs that have no owner or an expired lease."""
    runs = tables.runs
    query = (
        sa.select(runs.c.id)
        .where(runs.c.state == states.RunState.RUNNING.value,
               sa.or_(runs.c.lease_expires_at.is_(None), runs.c.lease_expires_at < now))
        .order_by(runs.c.id)
        .limit(limit)
    )
    if only is not None:
        query = query.where(runs.c.id.in_(only))
    if conn.dialect.name == "postgresql":
        query = query.with_for_update(skip_locked=True)
    ids = [r.id for r in conn.execute(query)]
    if ids:
        conn.execute(sa.update(runs).where(runs.c.id.in_(ids))
                     .values(owner=lease.owner, lease_expires_at=lease.until))
    return ids


def renew(conn: sa.Connection, *, lease: base.Lease, run_ids: list[str]) -> list[str]:
    runs = tables.runs
    if not run_ids:
        return []
    owned = sa.and_(runs.c.id.in_(run_ids), runs.c.owner == lease.owner,
                    runs.c.state == states.RunState.RUNNING.value)
    conn.execute(sa.update(runs).where(owned).values(lease_expires_at=lease.until))
    return [r.id for r in conn.execute(sa.select(runs.c.id).where(owned))]


def release(conn: sa.Connection, *, owner: str, run_ids: list[str]) -> None:
    runs = tables.runs
    if run_ids:
        conn.execute(sa.update(runs).where(runs.c.id.in_(run_ids), runs.c.owner == owner)
                     .values(owner=None, lease_expires_at=None))


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
