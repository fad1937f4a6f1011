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

        def read(conn: sa.Connection) -> builtins.list[base.RunFacts]:
            # SQLite keeps times as text that SQLAlchemy parses with a regular expression (most of
            # the read at 10,000 runs); read the text and let the C ``fromisoformat`` parse it.
            raw = conn.dialect.name == "sqlite"
            times = [sa.type_coerce(col, sa.String) if raw else col
                     for col in (c.created_at, c.started_at, c.finished_at)]
            query = (sa.select(c.id, c.pipeline, c.state, *times)
                     .where(c.id >= floor).order_by(c.id.desc()).limit(limit))
            found = []
            for row in conn.execute(query):
                run_id, pipeline, state, created, started, finished = row
                found.append(base.RunFacts(id=run_id, pipeline=pipeline, state=states.RunState(state),
                                           created_at=_time(created) or dt.datetime.fromtimestamp(0, dt.UTC),
                                           started_at=_time(started), finished_at=_time(finished)))
            return found

        return await self.database.run(read, write=False)


def _time(value: str | dt.datetime | None) -> dt.datetime | None:
    return _utc(dt.datetime.fromisoformat(value) if isinstance(value, str) else value)


def _utc(value: dt.datetime | None) -> dt.datetime | None:
    if value is None or value.tzinfo is not None:
        return value
    return value.replace(tzinfo=dt.UTC)
