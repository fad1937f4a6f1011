"""Aggregate reads for the dashboard, counted by the database (``Store.run_stats``).

The dashboard once read a few columns of every run in its window and counted them in Python:
~10,000 rows parsed and built into objects on every load, most of the page's wait. Here the
database does the counting (``GROUP BY``) and answers with a few hundred rows however many runs
the window holds:

- runs by UTC hour and state (the per-day bars, the weekday-by-hour heatmap, the failure rate
  and the total all fold from these groups: at most 24 per day and state);
- per pipeline, the count, mean and max duration of finished runs, slowest first, ``LIMIT``;
- the last few runs of each pipeline (``ROW_NUMBER() OVER (PARTITION BY pipeline ...)``);
- runs per state over all time (queued and running: the queue depth), one ``GROUP BY``.

The counts read only the index on (created_at, state, pipeline, started_at, finished_at), which
covers them (revision 0008): at 10,000 runs, reading the table's rows instead (their specs and
inputs) was most of the time. The last runs per pipeline read the (pipeline, id) index: run ids
sort by creation time (their first 12 hex digits are the creation time in ms). Hours are cut in
UTC: SQLite keeps times as naive UTC text, PostgreSQL as ``timestamptz`` read ``AT TIME ZONE 'UTC'``.
"""

from __future__ import annotations

import builtins
import datetime as dt
from typing import Any

import sqlalchemy as sa

from kubeline.domain import states
from kubeline.storage import base
from kubeline.storage.sql import engines, rows
from kubeline.storage.sql import tables as T

_BATCH = 200


class StatsMethods:
    """Mixed into ``SqlStore``."""

    database: engines.Database

    async def run_stats(self, *, since: dt.datetime, recent: int, slowest: int) -> base.RunStats:
        def read(conn: sa.Connection) -> base.RunStats:
            sqlite = conn.dialect.name == "sqlite"
            return base.RunStats(
                hours=_hours(conn, since=since, sqlite=sqlite),
                slowest=_slowest(conn, since=since, sqlite=sqlite, limit=slowest),
                recent=_recent(conn, since=since, sqlite=sqlite, limit=recent) if recent > 0 else [],
                by_state=_by_state(conn),
            )

        return await self.database.run(read, write=False)

    async def executor_demand(self, *, executor: str) -> base.ExecutorDemand:
        r, a = T.runs.c, T.attempts.c
        queued = (sa.select(r.pipeline, sa.func.count()).where(r.state == states.RunState.QUEUED.value)
                  .group_by(r.pipeline))
        pool = a.handle["pool"].as_string()
        held = (sa.select(pool, sa.func.count())
                .where(a.executor == executor, a.state == states.AttemptState.RUNNING.value).group_by(pool))
        unsent = (sa.select(r.pipeline, a.stage_id, sa.func.count())
                  .select_from(T.attempts.join(T.runs, r.id == a.run_id))
                  .where(a.executor == executor, a.state == states.AttemptState.PENDING.value)
                  .group_by(r.pipeline, a.stage_id))

        def read(conn: sa.Connection) -> base.ExecutorDemand:
            by_pipeline = {str(p): int(n) for p, n in conn.execute(queued)}
            by_stage = {(str(p), str(s)): int(n) for p, s, n in conn.execute(unsent)}
            names = set(by_pipeline) | {p for p, _ in by_stage}
            found = {}
            if names:
                for row in conn.execute(sa.select(T.pipelines).where(T.pipelines.c.name.in_(sorted(names)))):
                    found[row.name] = rows.pipeline_from_row(row._mapping)
            return base.ExecutorDemand(
                queued_runs=by_pipeline, unsent=by_stage, pipelines=found,
                held={str(p): int(n) for p, n in conn.execute(held) if p is not None})

        return await self.database.run(read, write=False)


def _hours(conn: sa.Connection, *, since: dt.datetime, sqlite: bool) -> builtins.list[base.HourCount]:
    c = T.runs.c
    # SQLite: the stored text's first 13 characters are the hour ("2026-12-06 07"), no date parsing.
    hour: sa.ColumnElement[str] = (
        sa.func.substr(sa.type_coerce(c.created_at, sa.String), 1, 13) if sqlite
        else sa.func.to_char(sa.func.timezone("UTC", c.created_at), "YYYY-MM-DD HH24"))
    bucket = hour.label("hour")
    query = (sa.select(bucket, c.state, sa.func.count().label("n"))
             .where(c.created_at >= since).group_by(bucket, c.state))
    # A window of 14 days has ~750 groups over ~340 hours: each hour's text parsed once, by the C
    # ``fromisoformat`` ("2026-12-06 07" is ISO 8601), not ``strptime`` (~20 us each in Python:
    # ~15 ms of a dashboard load's server CPU, beside the browser on a small machine).
    hours: dict[str, dt.datetime] = {}
    return [base.HourCount(hour=hours.get(key) or hours.setdefault(key, _hour(key)),
                           state=states.RunState(state), count=int(n))
            for key, state, n in conn.execute(query)]


def _hour(key: str) -> dt.datetime:
    return dt.datetime.fromisoformat(key).replace(tzinfo=dt.UTC)


def _slowest(conn: sa.Connection, *, since: dt.datetime, sqlite: bool, limit: int,
             ) -> builtins.list[base.PipelineDurations]:
    c = T.runs.c
    seconds: sa.ColumnElement[Any] = (
        (sa.func.julianday(c.finished_at) - sa.func.julianday(c.started_at)) * 86400.0 if sqlite
        else sa.extract("epoch", c.finished_at - c.started_at))
    mean = sa.func.avg(seconds).label("mean")
    name = _unordered(c.pipeline)
    # A finished_at is set only on entering a final state: no state filter, so the planner keeps
    # to the covering index on created_at instead of the one on state.
    query = (sa.select(name, sa.func.count().label("n"), mean, sa.func.max(seconds))
             .where(c.created_at >= since, c.started_at.is_not(None), c.finished_at.is_not(None))
             .group_by(name).order_by(mean.desc(), name).limit(limit))
    return [base.PipelineDurations(pipeline=pipeline, runs=int(n), mean_seconds=float(avg), max_seconds=float(top))
            for pipeline, n, avg, top in conn.execute(query)]


def _recent(conn: sa.Connection, *, since: dt.datetime, sqlite: bool, limit: int) -> builtins.list[base.RunFacts]:
    """The last ``limit`` runs of each pipeline with runs in the window: per pipeline one range of
    the (pipeline, id) index read backwards (``LIMIT``), so a pipeline's long history is never
    read. The per-pipeline selects go in ``UNION ALL`` batches (SQLite allows 500 arms)."""
    c = T.runs.c
    pipelines = [name for (name,) in conn.execute(
        sa.select(_unordered(c.pipeline)).where(c.created_at >= since).distinct())]
    floor = f"{int(since.timestamp() * 1000):012x}"
    # SQLite keeps times as text that SQLAlchemy parses with a regular expression; read the text
    # and let the C ``fromisoformat`` parse it.
    times = [sa.type_coerce(col, sa.String).label(col.name) if sqlite else col
             for col in (c.created_at, c.started_at, c.finished_at)]
    found: builtins.list[base.RunFacts] = []
    for start in range(0, len(pipelines), _BATCH):
        arms = [sa.select(c.id, c.pipeline, c.state, *times).where(c.pipeline == name, c.id >= floor)
                .order_by(c.id.desc()).limit(limit).subquery().select() for name in pipelines[start:start + _BATCH]]
        query = arms[0] if len(arms) == 1 else sa.union_all(*arms)
        for run_id, pipeline, state, created, started, finished in conn.execute(query):
            found.append(base.RunFacts(id=run_id, pipeline=pipeline, state=states.RunState(state),
                                       created_at=_time(created) or dt.datetime.fromtimestamp(0, dt.UTC),
                                       started_at=_time(started), finished_at=_time(finished)))
    found.sort(key=lambda run: run.id, reverse=True)  # stable: newest first within each pipeline
    found.sort(key=lambda run: run.pipeline)
    return found


def _unordered(column: sa.ColumnElement[str]) -> sa.ColumnElement[str]:
    """The column as an expression (``pipeline || ''``), for grouping: SQLite's planner, which has
    no statistics, would otherwise walk the (pipeline, id) index in order to skip a sort and read
    every run's row (~40 ms at 10,000 runs) instead of the window's range of the covering index
    (~5 ms)."""
    return column.op("||")(sa.literal_column("''")).label("name")


def _by_state(conn: sa.Connection) -> dict[states.RunState, int]:
    query = sa.select(T.runs.c.state, sa.func.count()).group_by(T.runs.c.state)
    return {states.RunState(state): int(n) for state, n in conn.execute(query)}


def _time(value: str | dt.datetime | None) -> dt.datetime | None:
    return _utc(dt.datetime.fromisoformat(value) if isinstance(value, str) else value)


def _utc(value: dt.datetime | None) -> dt.datetime | None:
    if value is None or value.tzinfo is not None:
        return value
    return value.replace(tzinfo=dt.UTC)
