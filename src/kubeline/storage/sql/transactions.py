"""The store's transactions, each a plain function of one ``Connection`` (see ``engines``).

State moves (runs, stages, attempts) are not here: every one goes through ``batches`` (the
moves of many runs in one transaction, the same on SQLite and PostgreSQL). What is here writes
its rows and one ``events`` row per change before the transaction commits; events wait for the
end of the transaction (``tails``: one INSERT, or on PostgreSQL one statement with the fence
check and the wake-ups) when the caller set that up. Nothing here awaits, so a transaction is
one round trip to the database thread (SQLite) or one greenlet (PostgreSQL).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa

from kubeline.domain import runs, states
from kubeline.storage import base, changes
from kubeline.storage import wakeups as W
from kubeline.storage.sql import claims, engines, rows, tails
from kubeline.storage.sql import tables as T

# Statements built once: the engine runs a handful per stage, and building a statement and its
# cache key costs more than SQLite takes to execute it. Primary keys bind as ``pk_*`` so the
# remaining parameters of an UPDATE become its SET clause.
_RUN_PK = T.runs.c.id == sa.bindparam("pk_id")
_ATTEMPT_PK = T.attempts.c.id == sa.bindparam("pk_id")
_LOCK_RUN = sa.select(*T.RUN_ROW).where(_RUN_PK).with_for_update()
_LOCK_ATTEMPT = sa.select(T.attempts).where(_ATTEMPT_PK).with_for_update()
_UPDATE_RUN = sa.update(T.runs).where(_RUN_PK)
_UPDATE_ATTEMPT = sa.update(T.attempts).where(_ATTEMPT_PK)
_INSERT_EVENT = sa.insert(T.events)
_INSERT_RUN = sa.insert(T.runs)
_INSERT_STAGES = sa.insert(T.stage_runs)
_RUN_EXISTS = sa.select(T.runs.c.id).where(_RUN_PK)


def _locked(conn: sa.Connection, stmt: sa.Select[Any], **pk: str) -> dict[str, Any] | None:
    """The row, locked for this transaction (``FOR UPDATE``; SQLite ignores the clause)."""
    row = conn.execute(stmt, pk).mappings().first()
    return None if row is None else dict(row)


def insert_event(
    conn: sa.Connection,
    *,
    run_id: str,
    entity: str,
    entity_id: str,
    from_state: states.State | None,
    to_state: states.State,
    reason: str,
    at: dt.datetime,
) -> None:
    row = event_row(run_id=run_id, entity=entity, entity_id=entity_id, from_state=from_state,
                    to_state=to_state, reason=reason, at=at)
    engines.notice(conn, W.Channel.EVENTS, run_id)
    add_events(conn, [row])


def add_events(conn: sa.Connection, rows_: list[dict[str, Any]]) -> None:
    """Insert these ``event_row``s now, or at the end of the transaction when ``tails`` runs it."""
    pending: list[dict[str, Any]] | None = conn.info.get(tails.PENDING_EVENTS)
    if pending is None:
        conn.execute(_INSERT_EVENT, rows_)
    else:
        pending.extend(rows_)


def event_row(
    *,
    run_id: str,
    entity: str,
    entity_id: str,
    from_state: states.State | None,
    to_state: states.State,
    reason: str,
    at: dt.datetime,
) -> dict[str, Any]:
    return {
        "run_id": run_id,
        "entity": entity,
        "entity_id": entity_id,
        "from_state": None if from_state is None else from_state.value,
        "to_state": to_state.value,
        "reason": reason,
        "at": at,
    }


def changed_values(to: states.State, now: dt.datetime, fields: dict[str, Any]) -> dict[str, Any]:
    """Column values for a move to ``to``: implied timestamps, then the caller's fields."""
    return {**base.fields_for_state(to, now), **rows.field_values(fields), "state": to.value}


def _require_run(conn: sa.Connection, run_id: str) -> None:
    if conn.execute(_RUN_EXISTS, {"pk_id": run_id}).first() is None:
        raise changes.run_not_found(run_id)


# runs --------------------------------------------------------------------------------------
def create_run(conn: sa.Connection, *, run: runs.Run, stages: list[runs.StageRun]) -> None:
    """Insert a queued run and its stages (``changes.check_new_run`` was applied by the caller)."""
    conn.execute(_INSERT_RUN, rows.run_to_row(run))  # not .values(row): a new statement to compile per run
    if stages:
        stage_rows = [rows.stage_to_row(s, position=i) for i, s in enumerate(stages)]
        conn.execute(_INSERT_STAGES, stage_rows)
    insert_event(conn, run_id=run.id, entity="run", entity_id=run.id, from_state=None,
                 to_state=run.state, reason="", at=run.created_at)
    engines.notice(conn, W.Channel.DISPATCH)


def request_cancel(conn: sa.Connection, *, run_id: str) -> runs.Run:
    row = _locked(conn, _LOCK_RUN, pk_id=run_id)
    if row is None:
        raise changes.run_not_found(run_id)
    current = states.RunState(row["state"])
    if states.is_final(current):
        raise changes.cancel_final(run_id, current.value)
    if not row["cancel_requested"]:
        conn.execute(_UPDATE_RUN, {"cancel_requested": True, "pk_id": run_id})
        insert_event(conn, run_id=run_id, entity="run", entity_id=run_id, from_state=current,
                     to_state=current, reason="cancel requested", at=runs.utcnow())
        engines.notice(conn, W.Channel.CANCEL, run_id)
    return rows.run_from_row({**row, "cancel_requested": True})


def claim_rows(
    conn: sa.Connection, *, limit: int, only: list[str] | None, lease: base.Lease | None = None,
    caps: base.ClaimCaps | None = None,
) -> list[tuple[dict[str, Any], list[dict[str, Any]]]]:
    """Claim (``claims.claim``) and the claims' events: each claimed run's row (``tables.RUN_ROW``)
    and its stage rows (``batches.claim_and_start`` makes them records)."""
    now = runs.utcnow()
    claimed = claims.claim(conn, limit=limit, only=only, now=now, lease=lease, caps=caps)
    if not claimed:
        return []
    for run_id in claimed:
        engines.notice(conn, W.Channel.EVENTS, run_id)
    add_events(conn, [
        event_row(run_id=run_id, entity="run", entity_id=run_id,
                  from_state=states.RunState.QUEUED, to_state=states.RunState.RUNNING,
                  reason="claimed", at=now)
        for run_id in claimed
    ])
    found = conn.execute(sa.select(*T.RUN_ROW).where(T.runs.c.id.in_(claimed)).order_by(T.runs.c.id))
    stages: dict[str, list[dict[str, Any]]] = {run_id: [] for run_id in claimed}
    for row in conn.execute(_CLAIMED_STAGES, {"ids": claimed}).mappings():
        stages[row["run_id"]].append(dict(row))
    return [(dict(run), stages[run["id"]]) for run in found.mappings()]


_CLAIMED_STAGES = (sa.select(T.stage_runs).where(T.stage_runs.c.run_id.in_(sa.bindparam("ids", expanding=True)))
                   .order_by(T.stage_runs.c.run_id, T.stage_runs.c.position))


def adopt_runs(
    conn: sa.Connection, *, lease: base.Lease, limit: int, only: list[str] | None = None,
    reclaim_before: dt.datetime | None = None, exclude: Sequence[str] = (),
) -> list[runs.Run]:
    adopted = claims.adopt(conn, lease=lease, limit=limit, only=only, now=runs.utcnow(),
                           reclaim_before=reclaim_before, exclude=exclude)
    if not adopted:
        return []
    found = conn.execute(sa.select(*T.RUN_ROW).where(T.runs.c.id.in_(adopted)).order_by(T.runs.c.id))
    return [rows.run_from_row(r) for r in found.mappings()]


# stages ------------------------------------------------------------------------------------
def list_stage_runs(conn: sa.Connection, *, run_id: str) -> list[runs.StageRun]:
    found = conn.execute(
        sa.select(T.stage_runs)
        .where(T.stage_runs.c.run_id == run_id)
        .order_by(T.stage_runs.c.position)
    ).mappings().all()
    if not found:
        _require_run(conn, run_id)
    return [rows.stage_from_row(r) for r in found]


# attempts ----------------------------------------------------------------------------------
def update_attempt(conn: sa.Connection, *, attempt_id: str, fields: dict[str, Any]) -> runs.Attempt:
    row = _locked(conn, _LOCK_ATTEMPT, pk_id=attempt_id)
    if row is None:
        raise changes.attempt_not_found(attempt_id)
    values = rows.field_values(fields)
    if values:
        conn.execute(_UPDATE_ATTEMPT, {**values, "pk_id": attempt_id})
        engines.notice(conn, W.Channel.UPLOAD, attempt_id)
    return rows.attempt_from_row({**row, **values})


# events ------------------------------------------------------------------------------------
def list_events(conn: sa.Connection, *, run_id: str, after: int) -> list[runs.Event]:
    found = conn.execute(
        sa.select(T.events)
        .where(T.events.c.run_id == run_id, T.events.c.id > after)
        .order_by(T.events.c.id)
    ).mappings().all()
    if not found:
        _require_run(conn, run_id)
    return [rows.event_from_row(r) for r in found]
