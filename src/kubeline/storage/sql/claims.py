"""Claiming queued runs: the one query where several server replicas compete.

The claim is fair: one statement ranks the queued runs *per pipeline* (``row_number() OVER
(PARTITION BY pipeline ORDER BY id)``) and keeps a run only while its rank fits the free
instances of its pipeline (``max_instances`` minus its running runs); a second window does the
same per executor for the per-executor caps; the global cap bounds the ``LIMIT``. Blocked runs
are filtered out *before* the limit, so no number of them delays a run of another pipeline
(the old claim looked at the oldest ``limit * 4`` queued runs only, and 300 blocked runs of one
pipeline starved every other). The ranking reads only what can matter: a skip scan of the
``(state, pipeline, id)`` index finds each pipeline's oldest queued run, one probe per pipeline
(``open_pipelines``: it no longer groups every queued run, which cost ~40 ms a claim at 10,000
queued on PostgreSQL), then the window ranks the first ``limit`` queued runs of the ``limit``
open pipelines with the oldest heads, so a claim costs the same behind 10 or 100,000 blocked
runs. Window functions and recursive CTEs need SQLite >= 3.25 (and any PostgreSQL).

Several replicas: on PostgreSQL, a claim takes one transaction-scoped advisory lock before it
counts (claims run one at a time; each is a few milliseconds), and under READ COMMITTED every
statement after the lock sees every claim committed before it, so the caps hold across replicas.
The UPDATE re-checks ``state = 'queued'`` (a run cancelled meanwhile is not claimed) and returns
the ids it moved. SQLite has one writer at a time (``BEGIN IMMEDIATE``), so it needs no lock.

Leases: a claim with a ``Lease`` stamps its owner and expiry on the runs and bumps their lease
generation (fencing, see ``fencing``); ``adopt`` takes running runs whose lease expired (their
process died) with ``SKIP LOCKED``, so one process adopts each, and bumps the generation too.
Renewal and release name each run with the generation the caller holds, so a process never
extends or drops a lease it lost (even to a later life of itself with the same owner name).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa

from kubeline.domain import states
from kubeline.storage import base, wakeups
from kubeline.storage.sql import engines, tables

_QUEUED = states.RunState.QUEUED.value
_RUNNING = states.RunState.RUNNING.value


def advisory_key(pipeline: str) -> int:
    """A stable signed 64-bit lock key for one pipeline's claims."""
    digest = hashlib.blake2b(f"kubeline.claim:{pipeline}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


GLOBAL_KEY = advisory_key("*all*")


@dataclasses.dataclass(frozen=True, kw_only=True)
class Window:
    """The queued runs the ranking needs to see: a prefix (``id <= last``) of each open pipeline."""

    pipelines: dict[str, str | None]  # pipeline -> last id to rank (None: all its queued runs)
    heads: dict[str, str] = dataclasses.field(default_factory=dict)  # pipeline -> its oldest queued id, if known


def open_pipelines(conn: sa.Connection, *, limit: int, only: list[str] | None) -> Window:
    """The pipelines that may start a run now, and how much of each queue can matter.

    Only a pipeline's first ``limit`` queued runs can be claimed by a claim of ``limit`` runs, so
    a pipeline is open when one of them fits its cap (``max_instances`` unset, or its rank within
    the free instances); only the ``limit`` open pipelines with the oldest heads can contribute,
    and the ranking then reads at most ``limit**2`` rows. Finding them reads no queue whole:
    ``queue_heads`` steps through the pipelines that have queued runs (one index probe each), a
    pipeline with no running run is open (``max_instances >= 1``), and only the pipelines with
    running runs have their first ``limit`` queued runs checked. So a claim costs the same behind
    10 or 100,000 blocked runs; it grows with the number of pipelines that have queued runs.
    """
    runs = tables.runs
    if only is not None:  # a handful of named runs: rank them all
        named = (sa.select(runs.c.pipeline, sa.func.min(runs.c.id).label("head"))
                 .where(runs.c.state == _QUEUED, runs.c.id.in_(only)).group_by(runs.c.pipeline))
        return Window(pipelines={str(p): None for p, _ in sorted(conn.execute(named), key=lambda r: r.head)})
    heads = {str(p): str(h) for p, h in conn.execute(
        _QUEUE_HEADS_PG if conn.dialect.name == "postgresql" else _QUEUE_HEADS)}
    if not heads:
        return Window(pipelines={})
    running = {str(p): int(n) for p, n in conn.execute(_RUNNING_PER_PIPELINE)}
    firsts = _first_queued(conn, heads={p: h for p, h in heads.items() if p in running}, limit=limit)
    pipelines: dict[str, str | None] = {}
    for pipeline in sorted(heads, key=heads.__getitem__):
        if len(pipelines) >= limit:
            break
        ahead = firsts.get(pipeline)
        if ahead is None:  # no running run: its head fits
            nth = conn.execute(_NTH_QUEUED, {"pipeline": pipeline, "head": heads[pipeline], "skip": limit - 1}).scalar()
            pipelines[pipeline] = nth
        elif any(cap is None or rank <= cap - running[pipeline] for rank, (_, cap) in enumerate(ahead, 1)):
            pipelines[pipeline] = ahead[-1][0] if len(ahead) >= limit else None
    return Window(pipelines=pipelines, heads={p: heads[p] for p in pipelines})


def _queue_heads() -> sa.Select[Any]:
    """``(pipeline, oldest queued id)`` of every pipeline with queued runs: a skip scan (recursive
    CTE) of the ``(state, pipeline, id)`` index, one probe per pipeline instead of a read of every
    queued run, on PostgreSQL and SQLite alike."""
    runs, inner = tables.runs, tables.runs.alias("next_queued")
    first = sa.select(runs.c.pipeline).where(runs.c.state == _QUEUED).order_by(runs.c.pipeline).limit(1)
    steps = sa.select(first.scalar_subquery().label("pipeline")).cte("queues", recursive=True)
    following = (sa.select(inner.c.pipeline).where(inner.c.state == _QUEUED, inner.c.pipeline > steps.c.pipeline)
                 .order_by(inner.c.pipeline).limit(1))
    queues = steps.union_all(sa.select(following.scalar_subquery()).where(steps.c.pipeline.is_not(None)))
    head = (sa.select(inner.c.id).where(inner.c.state == _QUEUED, inner.c.pipeline == queues.c.pipeline)
            .order_by(inner.c.id).limit(1))
    return sa.select(queues.c.pipeline, head.scalar_subquery().label("head")).where(queues.c.pipeline.is_not(None))


def _queue_heads_pg() -> sa.Select[Any]:
    """``_queue_heads`` on PostgreSQL: each probe of the skip scan returns the next pipeline and its
    head at once (``LATERAL``, which SQLite lacks), from the queued runs' partial index, so no
    probe reads a drained run whatever the statistics (``ix_runs_queued``)."""
    runs = tables.runs
    first = (sa.select(runs.c.pipeline, runs.c.id.label("head")).where(runs.c.state == _QUEUED)
             .order_by(runs.c.pipeline, runs.c.id).limit(1).cte("queues", recursive=True))
    inner = tables.runs.alias("next_queued")
    following = (sa.select(inner.c.pipeline, inner.c.id.label("head"))
                 .where(inner.c.state == _QUEUED, inner.c.pipeline > first.c.pipeline)
                 .order_by(inner.c.pipeline, inner.c.id).limit(1).lateral("following"))
    queues = first.union_all(sa.select(following.c.pipeline, following.c.head)
                             .select_from(first.join(following, sa.true())))
    return sa.select(queues.c.pipeline, queues.c.head)


_QUEUE_HEADS = _queue_heads()
_QUEUE_HEADS_PG = _queue_heads_pg()
_RUNNING_PER_PIPELINE = (sa.select(tables.runs.c.pipeline, sa.func.count())
                         .where(tables.runs.c.state == _RUNNING).group_by(tables.runs.c.pipeline))
_NTH_QUEUED = (sa.select(tables.runs.c.id)
               .where(tables.runs.c.state == _QUEUED, tables.runs.c.pipeline == sa.bindparam("pipeline"),
                      tables.runs.c.id >= sa.bindparam("head"))
               .order_by(tables.runs.c.id).offset(sa.bindparam("skip")).limit(1))


def _first_queued(conn: sa.Connection, *, heads: dict[str, str], limit: int) -> dict[str, list[tuple[str, int | None]]]:
    """The first ``limit`` queued runs ``(id, max_instances)`` of each pipeline of ``heads`` (from
    its head on), oldest first."""
    runs = tables.runs
    found: dict[str, list[tuple[str, int | None]]] = {}
    pipelines = list(heads)
    for at in range(0, len(pipelines), 100):
        parts = [sa.select(runs.c.pipeline, runs.c.id, runs.c.max_instances)
                 .where(runs.c.state == _QUEUED, runs.c.pipeline == pipeline, runs.c.id >= heads[pipeline])
                 .order_by(runs.c.id).limit(limit).subquery().select()
                 for pipeline in pipelines[at:at + 100]]
        for pipeline, run_id, cap in conn.execute(sa.union_all(*parts)):
            found.setdefault(str(pipeline), []).append((str(run_id), cap))
    for rows in found.values():
        rows.sort()
    return found


def eligible_query(
    *, limit: int, only: list[str] | None, caps: base.ClaimCaps, running_total: int, window: Window
) -> sa.Select[Any]:
    """Queued runs that fit every cap now, oldest first: ``(id, executor)`` rows."""
    runs = tables.runs
    executor = sa.func.coalesce(runs.c.executor, caps.default_executor)
    prefixes = [sa.and_(runs.c.pipeline == p,
                        *([] if last is None else [runs.c.id <= last]),
                        *([] if p not in window.heads else [runs.c.id >= window.heads[p]]))
                for p, last in window.pipelines.items()]
    queued = (
        sa.select(runs.c.id, runs.c.pipeline, runs.c.max_instances, executor.label("executor"),
                  sa.func.row_number().over(partition_by=runs.c.pipeline, order_by=runs.c.id).label("rank"))
        .where(runs.c.state == _QUEUED, sa.or_(sa.false(), *prefixes))
    )
    if only is not None:
        queued = queued.where(runs.c.id.in_(only))
    ranked = queued.subquery("ranked")
    per_pipeline = (
        sa.select(runs.c.pipeline, sa.func.count().label("n"))
        .where(runs.c.state == _RUNNING).group_by(runs.c.pipeline).subquery("running_pipelines")
    )
    fits_pipeline = sa.or_(
        ranked.c.max_instances.is_(None),
        ranked.c.rank <= ranked.c.max_instances - sa.func.coalesce(per_pipeline.c.n, 0),
    )
    eligible = (
        sa.select(ranked.c.id, ranked.c.executor)
        .select_from(ranked.outerjoin(per_pipeline, per_pipeline.c.pipeline == ranked.c.pipeline))
        .where(fits_pipeline)
    )
    if caps.per_executor:
        fits = eligible.subquery("fits")
        running_executor = sa.func.coalesce(runs.c.executor, caps.default_executor)
        per_executor = (
            sa.select(running_executor.label("executor"), sa.func.count().label("n"))
            .where(runs.c.state == _RUNNING).group_by(running_executor).subquery("running_executors")
        )
        cap = sa.case(caps.per_executor, value=fits.c.executor, else_=sa.null())
        by_executor = (
            sa.select(fits.c.id, fits.c.executor, cap.label("cap"),
                      sa.func.row_number().over(partition_by=fits.c.executor, order_by=fits.c.id).label("erank"))
            .subquery("by_executor")
        )
        eligible = (
            sa.select(by_executor.c.id, by_executor.c.executor)
            .select_from(by_executor.outerjoin(per_executor, per_executor.c.executor == by_executor.c.executor))
            .where(sa.or_(by_executor.c.cap.is_(None),
                          by_executor.c.erank <= by_executor.c.cap - sa.func.coalesce(per_executor.c.n, 0)))
        )
        order = by_executor.c.id
    else:
        order = ranked.c.id
    if caps.max_running is not None:
        limit = min(limit, caps.max_running - running_total)
    return eligible.order_by(order).limit(max(limit, 0))


def claim(
    conn: sa.Connection, *, limit: int, only: list[str] | None, now: dt.datetime,
    lease: base.Lease | None = None, caps: base.ClaimCaps | None = None,
) -> list[str]:
    """Move up to ``limit`` queued runs to running (oldest first, fairly) and return their ids.

    The caller owns the transaction and writes the events.
    """
    if limit <= 0 or only == []:
        return []
    caps = caps or base.ClaimCaps()
    runs = tables.runs
    if conn.dialect.name == "postgresql":
        conn.execute(sa.select(sa.func.pg_advisory_xact_lock(GLOBAL_KEY)))
    total = 0
    if caps.max_running is not None:
        total = int(conn.execute(sa.select(sa.func.count()).where(runs.c.state == _RUNNING)).scalar_one())
        if total >= caps.max_running:
            return []
    window = open_pipelines(conn, limit=limit, only=only)
    if not window.pipelines:
        return []
    query = eligible_query(limit=limit, only=only, caps=caps, running_total=total, window=window)
    chosen = conn.execute(query).all()
    if not chosen:
        return []
    values: dict[str, Any] = {"state": _RUNNING, "started_at": now}
    if lease is not None:
        values.update(owner=lease.owner, lease_expires_at=lease.until,
                      lease_generation=runs.c.lease_generation + 1)
    by_executor: dict[str, list[str]] = {}
    for run_id, executor in chosen:
        states.check(states.RunState.QUEUED, states.RunState.RUNNING, what=f"run {run_id}")
        by_executor.setdefault(str(executor), []).append(str(run_id))
    claimed: list[str] = []
    for executor, ids in by_executor.items():
        moved = conn.execute(
            sa.update(runs).where(runs.c.id.in_(ids), runs.c.state == _QUEUED)
            .values(executor=executor, **values).returning(runs.c.id)
        )
        claimed.extend(r.id for r in moved)
    return sorted(claimed)


def adopt(
    conn: sa.Connection, *, lease: base.Lease, limit: int, now: dt.datetime, only: list[str] | None = None,
    reclaim_before: dt.datetime | None = None, exclude: Sequence[str] = (),
) -> list[str]:
    """Give ``lease`` to up to ``limit`` running runs that have no owner or an expired lease (and,
    with ``reclaim_before``, those leased to the same owner before it: an earlier life of this
    replica), bumping their lease generation so the writes of their previous driver fail."""
    runs = tables.runs
    takeable = [runs.c.lease_expires_at.is_(None), runs.c.lease_expires_at < now]
    if reclaim_before is not None:
        takeable.append(sa.and_(runs.c.owner == lease.owner, runs.c.lease_expires_at < reclaim_before))
    query = (
        sa.select(runs.c.id)
        .where(runs.c.state == states.RunState.RUNNING.value, sa.or_(*takeable))
        .order_by(runs.c.id)
        .limit(limit)
    )
    if only is not None:
        query = query.where(runs.c.id.in_(only))
    if exclude:
        query = query.where(runs.c.id.not_in(list(exclude)))
    if conn.dialect.name == "postgresql":
        query = query.with_for_update(skip_locked=True)
    ids = [r.id for r in conn.execute(query)]
    if ids:
        conn.execute(sa.update(runs).where(runs.c.id.in_(ids))
                     .values(owner=lease.owner, lease_expires_at=lease.until,
                             lease_generation=runs.c.lease_generation + 1))
    return ids


def _held(fences: list[base.Fence]) -> sa.ColumnElement[bool]:
    runs = tables.runs
    return sa.tuple_(runs.c.id, runs.c.lease_generation).in_([(f.run_id, f.generation) for f in fences])


def renew(conn: sa.Connection, *, lease: base.Lease, fences: list[base.Fence]) -> list[str]:
    """The runs of ``fences`` still held by ``lease.owner`` at their fence's generation (in any
    state: a run that just ended is not "taken over"); the running ones get ``lease`` extended.
    The rows are locked in id order first, the order the batched moves lock them in, so a renewal
    and a batch never wait on each other in a cycle."""
    runs = tables.runs
    if not fences:
        return []
    held = sa.and_(_held(fences), runs.c.owner == lease.owner)
    ids = list(conn.execute(sa.select(runs.c.id).where(held).order_by(runs.c.id).with_for_update()).scalars())
    if ids:
        conn.execute(sa.update(runs).where(runs.c.id.in_(ids), runs.c.state == states.RunState.RUNNING.value)
                     .values(lease_expires_at=lease.until))
    return ids


def release(conn: sa.Connection, *, fences: list[base.Fence]) -> None:
    runs = tables.runs
    if fences:
        conn.execute(sa.update(runs).where(_held(fences)).values(owner=None, lease_expires_at=None))
        engines.notice(conn, wakeups.Channel.DISPATCH)  # another process may adopt them now
