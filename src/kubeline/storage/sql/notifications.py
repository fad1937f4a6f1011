"""The ``notifications`` outbox: enqueue once per key, claim due rows, record each outcome."""

from __future__ import annotations

import builtins
import dataclasses
import datetime as dt
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from kubeline.domain import runs
from kubeline.storage.sql import engines
from kubeline.storage.sql import tables as T

CLAIM_SECONDS = 120.0  # a 'sending' row whose sender died is retried after this


@dataclasses.dataclass(frozen=True, kw_only=True)
class Delivery:
    id: str
    key: str
    run_id: str
    pipeline: str
    event: str
    channel: str
    target: str
    spec: dict[str, Any]
    message: dict[str, Any]
    state: str
    attempts: int
    next_at: dt.datetime
    last_error: str
    created_at: dt.datetime
    sent_at: dt.datetime | None


def _from_row(row: sa.RowMapping) -> Delivery:
    return Delivery(**{f.name: row[f.name] for f in dataclasses.fields(Delivery)})


class Outbox:
    def __init__(self, database: engines.Database) -> None:
        self.database = database

    async def enqueue(self, *, key: str, run_id: str, pipeline: str, event: str, channel: str, target: str,
                      spec: dict[str, Any], message: dict[str, Any], rate_limit: int) -> bool:
        """Add a delivery unless ``key`` exists; beyond ``rate_limit`` an hour per (pipeline, target)
        it is recorded as suppressed. True when this call added it."""
        now = runs.utcnow()
        table = T.notifications

        def write(conn: sa.Connection) -> bool:
            recent = conn.execute(sa.select(sa.func.count()).select_from(table).where(
                table.c.pipeline == pipeline, table.c.target == target,
                table.c.state != "suppressed", table.c.created_at > now - dt.timedelta(hours=1))).scalar_one()
            limited = recent >= rate_limit
            insert = sqlite.insert(table) if self.database.dialect == "sqlite" else postgresql.insert(table)
            result = conn.execute(insert.values(
                id=runs.new_id(), key=key, run_id=run_id, pipeline=pipeline, event=event, channel=channel,
                target=target, spec=spec, message=message, state="suppressed" if limited else "pending",
                attempts=0, next_at=now, created_at=now, sent_at=None,
                last_error=f"rate limited: {recent} notifications to this target in the last hour "
                           f"(notify_rate_limit: {rate_limit})" if limited else "",
            ).on_conflict_do_nothing(index_elements=[table.c.key]))
            return bool(result.rowcount)
        return await self.database.run(write, write=True)

    async def claim_due(self, *, limit: int = 20) -> builtins.list[Delivery]:
        """Due deliveries, each marked 'sending' by this call (a row is claimed by one replica)."""
        now = runs.utcnow()
        table = T.notifications

        def write(conn: sa.Connection) -> builtins.list[Delivery]:
            due = conn.execute(sa.select(table).where(
                table.c.state.in_(("pending", "sending")), table.c.next_at <= now)
                .order_by(table.c.next_at).limit(limit)).mappings().all()
            claimed = []
            for row in due:
                moved = conn.execute(sa.update(table).where(
                    table.c.id == row["id"], table.c.state == row["state"], table.c.next_at == row["next_at"])
                    .values(state="sending", next_at=now + dt.timedelta(seconds=CLAIM_SECONDS)))
                if moved.rowcount:
                    claimed.append(dataclasses.replace(_from_row(row), state="sending"))
            return claimed
        return await self.database.run(write, write=True)

    async def finish(self, delivery_id: str, *, error: str, retry_in: float | None) -> None:
        """Record an attempt: sent (no error), retried in ``retry_in`` s, or failed for good."""
        now = runs.utcnow()
        table = T.notifications
        if not error:
            values: dict[str, Any] = {"state": "sent", "sent_at": now, "last_error": ""}
        elif retry_in is not None:
            values = {"state": "pending", "next_at": now + dt.timedelta(seconds=retry_in), "last_error": error}
        else:
            values = {"state": "failed", "last_error": error}

        def write(conn: sa.Connection) -> None:
            conn.execute(sa.update(table).where(table.c.id == delivery_id)
                         .values(attempts=table.c.attempts + 1, **values))
        await self.database.run(write, write=True)

    async def list(self, *, run_id: str | None = None, pipeline: str | None = None,
                   limit: int = 100) -> builtins.list[Delivery]:
        table = T.notifications
        query = sa.select(table).order_by(table.c.created_at.desc(), table.c.id.desc()).limit(limit)
        if run_id is not None:
            query = query.where(table.c.run_id == run_id)
        if pipeline is not None:
            query = query.where(table.c.pipeline == pipeline)

        def read(conn: sa.Connection) -> builtins.list[Delivery]:
            return [_from_row(r) for r in conn.execute(query).mappings()]
        return await self.database.run(read, write=False)
