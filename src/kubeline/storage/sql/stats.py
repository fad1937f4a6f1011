"""Aggregate reads for the dashboard: a few columns of the runs in a time window.

Reading whole runs (specs, inputs, outputs as JSON) to count them costs seconds at 10,000 runs;
these queries read only what the aggregates need. Run ids sort by creation time (their first 12
hex digits are the creation time in ms), so the window is an index range on the primary key.
"""

from __future__ import annotations

import builtins
import datetime as dt

import sqlalchemy as sa

from kubeline.domain import states
from kubeline.storage import base
from kubeline.storage.sql import engines
from kubeline.storage.sql import tables as T


class StatsMethods:
    """Mixed into ``SqlStore``."""

    database: engines.Database

    async def run_facts(self, *, since: dt.datetime, limit: int) -> builtins.list[base.RunFacts]:
        floor = f"{int(since.timestamp() * 1000):012x}"
        c = T.runs.c
        query = (sa.select(c.id, c.pipeline, c.state, c.created_at, c.started_at, c.finished_at)
                 .where(c.id >= floor).order_by(c.id.desc()).limit(limit))

        def read(conn: sa.Connection) -> builtins.list[base.RunFacts]:
            return [base.RunFacts(id=r.id, pipeline=r.pipeline, state=states.RunState(r.state),
                                  created_at=_utc(r.created_at) or r.created_at, started_at=_utc(r.started_at),
                                  finished_at=_utc(r.finished_at)) for r in conn.execute(query)]

        return await self.database.run(read, write=False)


def _utc(value: dt.datetime | None) -> dt.datetime | None:
    if value is None or value.tzinfo is not None:
        return value
    return value.replace(tzinfo=dt.UTC)
