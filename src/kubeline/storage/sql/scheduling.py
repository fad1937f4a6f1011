"""SqlStore methods for the scheduler and webhooks: schedule states, fires, deliveries.

Kept apart from ``store`` so each module stays small. Correctness with several replicas comes
from primary keys (one fire row per (schedule, fire time), one delivery row per id) and, for
the rate limit's count-then-insert, a transaction-scoped advisory lock per hook on PostgreSQL
(SQLite's ``BEGIN IMMEDIATE`` already serialises writers).
"""

from __future__ import annotations

import builtins
import datetime as dt
import functools
import hashlib
from collections.abc import Callable
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from kubeline.domain import runs
from kubeline.storage import base, changes
from kubeline.storage.sql import engines
from kubeline.storage.sql import tables as T
from kubeline.storage.sql import transactions as tx

_T = TypeVar("_T")
RATE_WINDOW = dt.timedelta(seconds=60)


def _insert(conn: sa.Connection, table: sa.Table) -> postgresql.Insert | sqlite.Insert:
    return sqlite.insert(table) if conn.dialect.name == "sqlite" else postgresql.insert(table)


def _state(row: sa.RowMapping) -> base.ScheduleState:
    return base.ScheduleState(schedule_key=row["schedule_key"], enabled=row["enabled"],
                              since=row["since"], updated_at=row["updated_at"])


def _hook_lock(conn: sa.Connection, hook_key: str) -> None:
    if conn.dialect.name == "postgresql":
        digest = hashlib.blake2b(f"kubeline.hook:{hook_key}".encode(), digest_size=8).digest()
        conn.execute(sa.select(sa.func.pg_advisory_xact_lock(int.from_bytes(digest, "big", signed=True))))


def ensure_state(conn: sa.Connection, *, schedule_key: str, since: dt.datetime) -> base.ScheduleState:
    table = T.schedule_states
    conn.execute(_insert(conn, table).values(schedule_key=schedule_key, enabled=None, since=since,
                                             updated_at=since).on_conflict_do_nothing())
    row = conn.execute(sa.select(table).where(table.c.schedule_key == schedule_key)).mappings().one()
    return _state(row)


def set_enabled(conn: sa.Connection, *, schedule_key: str, enabled: bool | None) -> base.ScheduleState:
    now = runs.utcnow()
    table = T.schedule_states
    stmt = _insert(conn, table).values(schedule_key=schedule_key, enabled=enabled, since=now, updated_at=now)
    conn.execute(stmt.on_conflict_do_update(index_elements=[table.c.schedule_key],
                                            set_={"enabled": enabled, "updated_at": now}))
    row = conn.execute(sa.select(table).where(table.c.schedule_key == schedule_key)).mappings().one()
    return _state(row)


def claim_fire(
    conn: sa.Connection, *, schedule_key: str, fire_time: dt.datetime, stale_after: float,
    run: base.NewRun | None = None,
) -> bool:
    table = T.schedule_fires
    now = runs.utcnow()
    run_id = None if run is None else run.run.id
    inserted = conn.execute(_insert(conn, table).values(
        schedule_key=schedule_key, fire_time=fire_time, run_id=run_id, created_at=now,
    ).on_conflict_do_nothing().returning(table.c.schedule_key)).first()
    if inserted is None:
        # The claimer died between recording the fire and submitting its run: take it over.
        retaken = conn.execute(sa.update(table).where(
            table.c.schedule_key == schedule_key, table.c.fire_time == fire_time, table.c.run_id.is_(None),
            table.c.created_at < now - dt.timedelta(seconds=stale_after),
        ).values(created_at=now, run_id=run_id).returning(table.c.schedule_key)).first()
        if retaken is None:
            return False
    if run is not None:
        tx.create_run(conn, run=run.run, stages=run.stages)
    return True


def accept_delivery(
    conn: sa.Connection, *, hook_key: str, delivery_id: str, now: dt.datetime, rate_limit: int, keep: float,
    run: base.NewRun | None = None,
) -> base.HookVerdict:
    table = T.webhook_deliveries
    _hook_lock(conn, hook_key)
    conn.execute(sa.delete(table).where(
        table.c.hook_key == hook_key, table.c.received_at < now - dt.timedelta(seconds=max(keep, 60.0))))
    seen = conn.execute(sa.select(table.c.delivery_id).where(
        table.c.hook_key == hook_key, table.c.delivery_id == delivery_id)).first()
    if seen is not None:
        return base.HookVerdict(accepted=False, replayed=True)
    recent = [r.received_at for r in conn.execute(
        sa.select(table.c.received_at).where(table.c.hook_key == hook_key,
                                             table.c.received_at > now - RATE_WINDOW)
        .order_by(table.c.received_at))]
    if len(recent) >= rate_limit:
        oldest = recent[len(recent) - rate_limit]
        return base.HookVerdict(accepted=False, retry_after=max(1.0, (oldest + RATE_WINDOW - now).total_seconds()))
    conn.execute(sa.insert(table).values(hook_key=hook_key, delivery_id=delivery_id, received_at=now))
    if run is not None:
        tx.create_run(conn, run=run.run, stages=run.stages)
    return base.HookVerdict(accepted=True)


class SchedulingMethods:
    """Mixed into ``SqlStore``."""

    database: engines.Database

    async def _tx(self, fn: Callable[..., _T], /, **kwargs: Any) -> _T:
        return await self.database.run(functools.partial(fn, **kwargs), write=True)

    async def _read(self, fn: Callable[[sa.Connection], _T]) -> _T:
        return await self.database.run(fn, write=False)

    async def ensure_schedule_state(self, schedule_key: str, *, since: dt.datetime) -> base.ScheduleState:
        return await self._tx(ensure_state, schedule_key=schedule_key, since=since)

    async def list_schedule_states(self) -> builtins.list[base.ScheduleState]:
        table = T.schedule_states
        return await self._read(lambda conn: [
            _state(r) for r in conn.execute(sa.select(table).order_by(table.c.schedule_key)).mappings()])

    async def set_schedule_enabled(self, schedule_key: str, enabled: bool | None) -> base.ScheduleState:
        return await self._tx(set_enabled, schedule_key=schedule_key, enabled=enabled)

    async def claim_fire(self, schedule_key: str, fire_time: dt.datetime, *, stale_after: float = 60.0,
                         run: base.NewRun | None = None) -> bool:
        if run is not None:
            changes.check_new_run(run.run, run.stages)
        return await self._tx(claim_fire, schedule_key=schedule_key, fire_time=fire_time, stale_after=stale_after,
                              run=run)

    async def set_fire_run(self, schedule_key: str, fire_time: dt.datetime, run_id: str) -> None:
        table = T.schedule_fires
        stmt = sa.update(table).where(table.c.schedule_key == schedule_key,
                                      table.c.fire_time == fire_time).values(run_id=run_id)
        await self.database.run(lambda conn: conn.execute(stmt), write=True)

    async def last_fire_times(self) -> dict[str, dt.datetime]:
        table = T.schedule_fires
        query = sa.select(table.c.schedule_key, sa.func.max(table.c.fire_time)).group_by(table.c.schedule_key)

        return await self._read(lambda conn: {key: _as_datetime(value) for key, value in conn.execute(query)})

    async def list_fires(self, schedule_key: str, *, limit: int = 50) -> builtins.list[base.ScheduleFire]:
        table = T.schedule_fires
        query = (sa.select(table).where(table.c.schedule_key == schedule_key)
                 .order_by(table.c.fire_time.desc()).limit(limit))
        return await self._read(lambda conn: [
            base.ScheduleFire(schedule_key=r["schedule_key"], fire_time=r["fire_time"], run_id=r["run_id"],
                              created_at=r["created_at"]) for r in conn.execute(query).mappings()])

    async def latest_fire(self) -> base.ScheduleFire | None:
        table = T.schedule_fires
        query = sa.select(table).order_by(table.c.fire_time.desc()).limit(1)  # ix_schedule_fires_fire_time

        def read(conn: sa.Connection) -> base.ScheduleFire | None:
            row = conn.execute(query).mappings().first()
            return None if row is None else base.ScheduleFire(
                schedule_key=row["schedule_key"], fire_time=row["fire_time"], run_id=row["run_id"],
                created_at=row["created_at"])

        return await self._read(read)

    async def accept_delivery(
        self, hook_key: str, delivery_id: str, *, now: dt.datetime, rate_limit: int, keep: float,
        run: base.NewRun | None = None,
    ) -> base.HookVerdict:
        if run is not None:
            changes.check_new_run(run.run, run.stages)
        return await self._tx(accept_delivery, hook_key=hook_key, delivery_id=delivery_id, now=now,
                              rate_limit=rate_limit, keep=keep, run=run)


def _as_datetime(value: Any) -> dt.datetime:
    if isinstance(value, str):  # SQLite returns max() of a DATETIME column as text
        value = dt.datetime.fromisoformat(value)
    assert isinstance(value, dt.datetime)
    return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)
