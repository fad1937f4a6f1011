"""Retention queries: finished runs per pipeline, deleting finished runs with all their rows, old audit rows.

The delete re-checks the state in its own WHERE, so a run that was retried or adopted between
planning and deleting (no longer final) is never deleted.
"""

from __future__ import annotations

import datetime as dt
import functools

import sqlalchemy as sa

from kubeline.domain import retention, states
from kubeline.storage.sql import engines
from kubeline.storage.sql import tables as T

FINAL = [s.value for s in states.FINAL_RUN]


class RetentionQueries:
    def __init__(self, database: engines.Database) -> None:
        self.database = database

    async def pipelines(self) -> list[str]:
        def read(conn: sa.Connection) -> list[str]:
            return [r[0] for r in conn.execute(sa.select(T.runs.c.pipeline).distinct().order_by(T.runs.c.pipeline))]
        return await self.database.run(read, write=False)

    async def finished(self, pipeline: str) -> list[retention.Finished]:
        """Finished runs of ``pipeline``, newest first."""
        query = (sa.select(T.runs.c.id, T.runs.c.finished_at, T.runs.c.created_at)
                 .where(T.runs.c.pipeline == pipeline, T.runs.c.state.in_(FINAL)).order_by(T.runs.c.id.desc()))

        def read(conn: sa.Connection) -> list[retention.Finished]:
            return [retention.Finished(id=r.id, finished_at=r.finished_at or r.created_at) for r in conn.execute(query)]
        return await self.database.run(read, write=False)

    async def audit_before(self, before: dt.datetime) -> int:
        """How many audit rows are older than ``before``."""
        query = sa.select(sa.func.count()).select_from(T.audit_log).where(T.audit_log.c.at < before)
        return await self.database.run(lambda conn: int(conn.execute(query).scalar_one()), write=False)

    async def delete_audit(self, before: dt.datetime) -> int:
        """Delete the audit rows older than ``before``; how many went."""
        statement = sa.delete(T.audit_log).where(T.audit_log.c.at < before)
        return await self.database.run(lambda conn: int(conn.execute(statement).rowcount or 0), write=True)

    async def delete_runs(self, run_ids: list[str]) -> list[str]:
        """Delete these runs if still finished (stages, attempts, events, notifications too); the ids deleted."""
        result: list[str] = []
        for start in range(0, len(run_ids), 500):
            result += await self.database.run(functools.partial(_delete, run_ids=run_ids[start:start + 500]),
                                              write=True)
        return result


def _delete(conn: sa.Connection, *, run_ids: list[str]) -> list[str]:
    gone = [r[0] for r in conn.execute(sa.select(T.runs.c.id).where(T.runs.c.id.in_(run_ids),
                                                                     T.runs.c.state.in_(FINAL)))]
    if gone:
        for table in (T.events, T.attempts, T.stage_runs, T.notifications):
            conn.execute(sa.delete(table).where(table.c.run_id.in_(gone)))
        conn.execute(sa.update(T.schedule_fires).where(T.schedule_fires.c.run_id.in_(gone)).values(run_id=None))
        conn.execute(sa.delete(T.runs).where(T.runs.c.id.in_(gone)))
    return gone
