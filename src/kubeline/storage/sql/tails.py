"""The end of a write transaction: its events and its wake-ups in one statement.

On PostgreSQL a round trip costs more than the statement itself (the server's share of it, and
psycopg's and asyncio's share in this process). A write transaction's events (one INSERT) and
wake-ups (``pg_notify``) are one statement here (``_TAIL``): a data-modifying CTE that inserts
the events from one JSON parameter, and the notifications, in a statement whose text never changes
(prepared once per connection). The fence check of a driver's writes is in ``batches`` (the
locking read that opens a batch).

SQLite (one writer, in process): the events go in one INSERT at the end; a round trip there is a
function call.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable
from typing import Any, TypeVar

import sqlalchemy as sa

from kubeline.storage.sql import engines
from kubeline.storage.sql import tables as T

_T = TypeVar("_T")
PENDING_EVENTS = "kubeline_pending_events"
_INSERT_EVENTS = sa.insert(T.events)  # built once: see transactions

_TAIL = sa.text(
    "WITH added AS ("
    " INSERT INTO events (run_id, entity, entity_id, from_state, to_state, reason, at)"
    " SELECT e.run_id, e.entity, e.entity_id, e.from_state, e.to_state, e.reason, e.at"
    " FROM ROWS FROM (json_to_recordset(CAST(:events AS json)) AS (run_id text, entity text, entity_id text,"
    " from_state text, to_state text, reason text, at timestamptz)) WITH ORDINALITY"
    " AS e(run_id, entity, entity_id, from_state, to_state, reason, at, n) ORDER BY e.n),"
    " notified AS (SELECT pg_notify(v.c, v.k) FROM json_to_recordset(CAST(:notices AS json)) AS v(c text, k text))"
    " SELECT (SELECT count(*) FROM notified) AS notified"
)


def deferred(fn: Callable[[sa.Connection], _T]) -> Callable[[sa.Connection], _T]:
    """``fn`` as a write transaction whose events go at its end."""
    def run(conn: sa.Connection) -> _T:
        info = conn.info  # once: see engines._with_notices
        pending: list[dict[str, Any]] = []
        info[PENDING_EVENTS] = pending
        try:
            if conn.dialect.name != "postgresql":
                result = fn(conn)
                if pending:
                    conn.execute(_INSERT_EVENTS, pending)
                return result
            engines.finish_with(conn, lambda c, notices: _tail(c, events=pending, notices=notices))
            return fn(conn)
        finally:
            info.pop(PENDING_EVENTS, None)

    return run


def _tail(conn: sa.Connection, *, events: list[dict[str, Any]], notices: engines.Notices) -> None:
    """The events and notices go as two JSON texts (one ``json.dumps`` each, in C): as arrays, one
    per column, psycopg dumped them element by element in Python (~0.3 ms per no-op run)."""
    if not events and not notices:
        return
    rows = [{**event, "at": _aware(event["at"]).isoformat()} for event in events]
    conn.execute(_TAIL, {"events": json.dumps(rows, separators=(",", ":")),
                         "notices": json.dumps([{"c": channel.value, "k": key} for channel, key in notices],
                                               separators=(",", ":"))})


def _aware(at: dt.datetime) -> dt.datetime:
    return at.replace(tzinfo=dt.UTC) if at.tzinfo is None else at
