"""The end of a write transaction: its events, its fence check and its wake-ups in one statement.

On PostgreSQL a round trip costs more than the statement itself (the server's share of it, and
psycopg's and asyncio's share in this process: together most of the engine's CPU per stage). A
driver's transaction used to end with three statements (the fence's UPDATE first, the events'
INSERT, ``pg_notify``); here they are one (``_TAIL``): data-modifying CTEs that lock the run's
row at its generation, insert the events from arrays and notify, in a statement whose text never
changes (prepared once per connection).

Why the fence may come last: a transaction whose run was adopted meanwhile still fails before
it commits. The tail's UPDATE takes the run's row lock until the commit, so an adoption (``FOR
UPDATE SKIP LOCKED``) either committed first (the UPDATE, re-evaluated on the new row version,
matches nothing: ``LeaseLostError``, everything rolls back) or skips the run until this commit.
A move that fails its own check first (the run changed under its new owner) checks the fence
before the error goes up, so a lost lease is still reported as such.

SQLite (one writer, in process): the fence is checked first and the events go in one INSERT at
the end, as before; a round trip there is a function call.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any, TypeVar

import sqlalchemy as sa

from kubeline.domain import errors
from kubeline.storage import base
from kubeline.storage.sql import engines, fencing
from kubeline.storage.sql import tables as T

_T = TypeVar("_T")
PENDING_EVENTS = "kubeline_pending_events"
_INSERT_EVENTS = sa.insert(T.events)  # built once: see transactions
_EVENT_COLUMNS = ("run_id", "entity", "entity_id", "from_state", "to_state", "reason", "at")

_TAIL = sa.text(
    "WITH fenced AS ("
    " UPDATE runs SET lease_generation = lease_generation"
    " WHERE CAST(:fence_run AS text) IS NOT NULL AND id = CAST(:fence_run AS text)"
    " AND lease_generation = CAST(:fence_gen AS integer) RETURNING id),"
    " added AS ("
    " INSERT INTO events (run_id, entity, entity_id, from_state, to_state, reason, at)"
    " SELECT e.run_id, e.entity, e.entity_id, e.from_state, e.to_state, e.reason, e.at"
    " FROM unnest(CAST(:run_id AS text[]), CAST(:entity AS text[]), CAST(:entity_id AS text[]),"
    " CAST(:from_state AS text[]), CAST(:to_state AS text[]), CAST(:reason AS text[]),"
    " CAST(:at AS timestamptz[])) WITH ORDINALITY AS e(run_id, entity, entity_id, from_state, to_state,"
    " reason, at, n) ORDER BY e.n),"
    " notified AS (SELECT pg_notify(v.c, v.k) FROM unnest(CAST(:c AS text[]), CAST(:k AS text[])) AS v(c, k))"
    " SELECT (SELECT count(*) FROM fenced) AS fenced, (SELECT count(*) FROM notified) AS notified"
)


def deferred(fn: Callable[[sa.Connection], _T], fence: base.Fence | None) -> Callable[[sa.Connection], _T]:
    """``fn`` as a write transaction whose events (and fence check, on PostgreSQL) go at its end."""
    def run(conn: sa.Connection) -> _T:
        info = conn.info  # once: see engines._with_notices
        pending: list[dict[str, Any]] = []
        info[PENDING_EVENTS] = pending
        try:
            if conn.dialect.name != "postgresql":
                result = fencing.guarded(fn, fence)(conn)
                if pending:
                    conn.execute(_INSERT_EVENTS, pending)
                return result
            engines.finish_with(conn, lambda c, notices: _tail(c, events=pending, notices=notices, fence=fence))
            try:
                return fn(conn)
            except errors.KubelineError:
                if fence is not None:  # a lost lease is the reason to report (the transaction is usable:
                    fencing.check(conn, fence)  # the move failed its check in Python, not in SQL)
                raise
        finally:
            info.pop(PENDING_EVENTS, None)

    return run


def _tail(conn: sa.Connection, *, events: list[dict[str, Any]], notices: engines.Notices,
          fence: base.Fence | None) -> None:
    if fence is None and not events and not notices:
        return
    params: dict[str, Any] = {column: [e[column] for e in events] for column in _EVENT_COLUMNS}
    params["at"] = [_aware(at) for at in params["at"]]
    params.update(c=[channel.value for channel, _ in notices], k=[key for _, key in notices],
                  fence_run=None if fence is None else fence.run_id,
                  fence_gen=None if fence is None else fence.generation)
    fenced = conn.execute(_TAIL, params).scalar_one()
    if fence is not None and fenced != 1:
        fencing.check(conn, fence)  # raises LeaseLostError (or not found)


def _aware(at: dt.datetime) -> dt.datetime:
    return at.replace(tzinfo=dt.UTC) if at.tzinfo is None else at
