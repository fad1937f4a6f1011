"""``logs.index.ChunkIndex`` on the SQL database (Core statements: one short transaction each)."""

from __future__ import annotations

import dataclasses
from typing import Any

import sqlalchemy as sa

from kubeline.domain import runs
from kubeline.logs import index
from kubeline.storage import wakeups
from kubeline.storage.sql import engines, tables

_C = tables.log_chunks
_S = tables.log_streams


class SqlChunkIndex:
    def __init__(self, database: engines.Database) -> None:
        self.database = database

    async def add_chunk(self, chunk: index.Chunk) -> None:
        values = {f.name: getattr(chunk, f.name) for f in _FIELDS}

        def write(conn: sa.Connection) -> None:
            conn.execute(_C.insert().values(**values, created_at=runs.utcnow()))
            # followers on every replica look at the index now (NOTIFY on PostgreSQL)
            engines.notice(conn, wakeups.Channel.LOGS, chunk.run_id)

        await self.database.run(write, write=True)

    async def chunks(self, run_id: str, *, stage_id: str | None = None,
                     attempt: int | None = None) -> list[index.Chunk]:
        query = sa.select(_C).where(_C.c.run_id == run_id)
        if stage_id is not None:
            query = query.where(_C.c.stage_id == stage_id)
        if attempt is not None:
            query = query.where(_C.c.attempt == attempt)
        query = query.order_by(_C.c.stage_id, _C.c.attempt, _C.c.seq)
        rows = await self.database.run(lambda conn: list(conn.execute(query).mappings()), write=False)
        return [_chunk(row) for row in rows]

    async def last_chunk(self, *, run_id: str, stage_id: str, attempt: int) -> index.Chunk | None:
        query = (sa.select(_C).where(_C.c.run_id == run_id, _C.c.stage_id == stage_id, _C.c.attempt == attempt)
                 .order_by(_C.c.seq.desc()).limit(1))
        row = await self.database.run(lambda conn: conn.execute(query).mappings().first(), write=False)
        return None if row is None else _chunk(row)

    async def set_delay(self, *, run_id: str, stage_id: str, attempt: int, writer: str,
                        reason: str | None) -> None:
        key = {"run_id": run_id, "stage_id": stage_id, "attempt": attempt}
        where = sa.and_(_S.c.run_id == run_id, _S.c.stage_id == stage_id, _S.c.attempt == attempt)

        def write(conn: sa.Connection) -> None:
            now = runs.utcnow()
            found = conn.execute(sa.select(_S.c.delayed_since).where(where)).first()
            since = None if reason is None else (found[0] if found and found[0] is not None else now)
            values = {"writer": writer, "delayed_since": since, "delay_reason": reason or "", "updated_at": now}
            if found is None:
                conn.execute(_S.insert().values(**key, **values))
            else:
                conn.execute(_S.update().where(where).values(**values))

        await self.database.run(write, write=True)

    async def delays(self, run_id: str) -> list[index.Delay]:
        query = (sa.select(_S).where(_S.c.run_id == run_id, _S.c.delayed_since.is_not(None))
                 .order_by(_S.c.stage_id, _S.c.attempt))
        rows = await self.database.run(lambda conn: list(conn.execute(query).mappings()), write=False)
        return [index.Delay(stage_id=r["stage_id"], attempt=r["attempt"], writer=r["writer"],
                            since=r["delayed_since"], reason=r["delay_reason"]) for r in rows]

    async def delete_run(self, run_id: str) -> None:
        def write(conn: sa.Connection) -> None:
            conn.execute(_C.delete().where(_C.c.run_id == run_id))
            conn.execute(_S.delete().where(_S.c.run_id == run_id))

        await self.database.run(write, write=True)


_FIELDS = list(dataclasses.fields(index.Chunk))


def _chunk(row: Any) -> index.Chunk:
    return index.Chunk(**{f.name: row[f.name] for f in _FIELDS})
