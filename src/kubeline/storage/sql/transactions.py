"""The store's transactions, each a plain function of one ``Connection`` (see ``engines``).

A state change checks the move with ``domain.states.check``, updates the row and adds one
``events`` row, all before the transaction commits. On SQLite it reads the row first (under
``BEGIN IMMEDIATE`` the write lock is already ours), then updates it. On PostgreSQL it is one
statement, ``UPDATE ... FROM (SELECT ... FOR UPDATE) AS old ... RETURNING``: the row is locked,
its state must be one the rules allow a move from (``_sources``, made from ``domain.states``),
and the old state comes back for the event; when nothing matched, the row is read to say why.
Events wait for the end of the transaction (``tails``: one INSERT, or on PostgreSQL one
statement with the fence check and the wake-ups) when the caller set that up. Nothing here
awaits, so a transaction is one round trip to the database thread (SQLite) or one greenlet
(PostgreSQL).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
from collections.abc import Callable, Sequence
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
_STAGE_PK = sa.and_(
    T.stage_runs.c.run_id == sa.bindparam("pk_run_id"),
    T.stage_runs.c.stage_id == sa.bindparam("pk_stage_id"),
)
_ATTEMPT_PK = T.attempts.c.id == sa.bindparam("pk_id")
_LOCK_RUN = sa.select(T.runs).where(_RUN_PK).with_for_update()
_LOCK_STAGE = sa.select(T.stage_runs).where(_STAGE_PK).with_for_update()
_LOCK_ATTEMPT = sa.select(T.attempts).where(_ATTEMPT_PK).with_for_update()
_UPDATE_RUN = sa.update(T.runs).where(_RUN_PK)
_UPDATE_STAGE = sa.update(T.stage_runs).where(_STAGE_PK)
_UPDATE_ATTEMPT = sa.update(T.attempts).where(_ATTEMPT_PK)
_INSERT_EVENT = sa.insert(T.events)
_INSERT_ATTEMPT = sa.insert(T.attempts)
_INSERT_RUN = sa.insert(T.runs)
_INSERT_STAGES = sa.insert(T.stage_runs)
_RUN_EXISTS = sa.select(T.runs.c.id).where(_RUN_PK)


def _locked(conn: sa.Connection, stmt: sa.Select[Any], **pk: str) -> dict[str, Any] | None:
    """The row, locked for this transaction (``FOR UPDATE``; SQLite ignores the clause)."""
    row = conn.execute(stmt, pk).mappings().first()
    return None if row is None else dict(row)


def _move_statement(table: sa.Table, pk: sa.ColumnElement[bool]) -> sa.Update:
    """PostgreSQL: move the row at ``pk`` if its state is in ``:sources``; returns the new row and
    ``old_state``. The locking sub-select reads the row's latest version, so ``old_state`` is the
    state the move replaced even when another transaction changed the row just before."""
    old = sa.select(*table.primary_key.columns, table.c.state).where(pk).with_for_update().subquery("old")
    return (
        sa.update(table)
        .where(*[column == old.c[column.key] for column in table.primary_key.columns],
               old.c.state.in_(sa.bindparam("sources", expanding=True)))
        .returning(old.c.state.label("old_state"), *table.c)
    )


_MOVE_RUN = _move_statement(T.runs, _RUN_PK)
_MOVE_STAGE = _move_statement(T.stage_runs, _STAGE_PK)
_MOVE_ATTEMPT = _move_statement(T.attempts, _ATTEMPT_PK)
_COUNT_ATTEMPT = sa.update(T.stage_runs).where(_STAGE_PK).values(attempts=T.stage_runs.c.attempts + 1)


@functools.cache
def _sources(to: states.State) -> list[str]:
    """The states a move to ``to`` may start from (``domain.states``' rules)."""
    return [s.value for s in type(to) if states.allowed(s, to)]


def _moved(conn: sa.Connection, stmt: sa.Update, to: states.State, values: dict[str, Any],
           pk: dict[str, str]) -> tuple[str, dict[str, Any]] | None:
    """PostgreSQL: the old state and the new row of a one-statement move (None: nothing matched,
    or SQLite: the caller reads the row to move it, or to say why it cannot)."""
    if conn.dialect.name != "postgresql":
        return None
    found = conn.execute(stmt, {**values, **pk, "sources": _sources(to)}).mappings().first()
    if found is None:
        return None
    row = dict(found)
    return row.pop("old_state"), row


@dataclasses.dataclass(frozen=True)
class _Statements:
    """One table's statements for a state move: the one-statement move (PostgreSQL), and the
    locked read and the update of the read-then-update (SQLite, and to say why a move cannot)."""

    move: sa.Update
    lock: sa.Select[Any]
    update: sa.Update


_RUN_ROWS = _Statements(_MOVE_RUN, _LOCK_RUN, _UPDATE_RUN)
_STAGE_ROWS = _Statements(_MOVE_STAGE, _LOCK_STAGE, _UPDATE_STAGE)
_ATTEMPT_ROWS = _Statements(_MOVE_ATTEMPT, _LOCK_ATTEMPT, _UPDATE_ATTEMPT)


def _move(conn: sa.Connection, rows_: _Statements, *, to: states.State, values: dict[str, Any],
          pk: dict[str, str], what: str, missing: Callable[[], Exception]) -> tuple[Any, dict[str, Any]]:
    """Move the row at ``pk`` to ``to`` with ``values``: its old state (``to``'s type) and new row.
    Raises ``missing()`` without the row, and ``states.check``'s error when the move is not allowed."""
    moved = _moved(conn, rows_.move, to, values, pk)
    if moved is None:
        row = _locked(conn, rows_.lock, **pk)
        if row is None:
            raise missing()
        states.check(type(to)(row["state"]), to, what=what)
        conn.execute(rows_.update, {**values, **pk})
        moved = row["state"], {**row, **values}
    current = type(to)(moved[0])
    states.check(current, to, what=what)
    return current, moved[1]


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


def _changes(to: states.State, now: dt.datetime, fields: dict[str, Any]) -> dict[str, Any]:
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


def transition_run(
    conn: sa.Connection, *, run_id: str, to: states.RunState, reason: str, fields: dict[str, Any],
    spawn: Sequence[base.NewRun] = (),
) -> runs.Run:
    now = runs.utcnow()
    values = _changes(to, now, fields)
    current, moved = _move(conn, _RUN_ROWS, to=to, values=values, pk={"pk_id": run_id},
                           what=changes.run_what(run_id), missing=lambda: changes.run_not_found(run_id))
    insert_event(conn, run_id=run_id, entity="run", entity_id=run_id, from_state=current,
                 to_state=to, reason=reason, at=now)
    if states.is_final(to):
        engines.notice(conn, W.Channel.DISPATCH)  # a slot of its pipeline (and the caps) is free
    for new in spawn:
        create_run(conn, run=new.run, stages=new.stages)
    return rows.run_from_row(moved)


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


def claim_queued_runs(
    conn: sa.Connection, *, limit: int, only: list[str] | None, lease: base.Lease | None = None,
    caps: base.ClaimCaps | None = None,
) -> list[base.Claimed]:
    """Claim (``claims.claim``), the claims' events, and the claimed runs with their stage rows."""
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
    found = conn.execute(sa.select(T.runs).where(T.runs.c.id.in_(claimed)).order_by(T.runs.c.id))
    stages: dict[str, list[runs.StageRun]] = {run_id: [] for run_id in claimed}
    for row in conn.execute(_CLAIMED_STAGES, {"ids": claimed}).mappings():
        stages[row["run_id"]].append(rows.stage_from_row(row))
    return [base.Claimed(run=run, stages=stages[run.id]) for run in map(rows.run_from_row, found.mappings())]


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
    found = conn.execute(sa.select(T.runs).where(T.runs.c.id.in_(adopted)).order_by(T.runs.c.id))
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


def _stage_missing(conn: sa.Connection, run_id: str, stage_id: str) -> Exception:
    """The error for a stage row that is not there: its run's (raised) when the run is missing too."""
    _require_run(conn, run_id)
    return changes.stage_not_found(run_id, stage_id)


def transition_stage(
    conn: sa.Connection,
    *,
    run_id: str,
    stage_id: str,
    to: states.StageState,
    reason: str,
    fields: dict[str, Any],
) -> runs.StageRun:
    now = runs.utcnow()
    values = _changes(to, now, fields)
    pk = {"pk_run_id": run_id, "pk_stage_id": stage_id}
    current, moved = _move(conn, _STAGE_ROWS, to=to, values=values, pk=pk, what=changes.stage_what(run_id, stage_id),
                           missing=lambda: _stage_missing(conn, run_id, stage_id))
    insert_event(conn, run_id=run_id, entity="stage", entity_id=stage_id, from_state=current,
                 to_state=to, reason=reason, at=now)
    return rows.stage_from_row(moved)


# attempts ----------------------------------------------------------------------------------
def create_attempt(conn: sa.Connection, *, attempt: runs.Attempt) -> None:
    counted = conn.execute(_COUNT_ATTEMPT, {"pk_run_id": attempt.run_id, "pk_stage_id": attempt.stage_id})
    if counted.rowcount != 1:  # the UPDATE locked the stage's row, if there is one
        _require_run(conn, attempt.run_id)
        raise changes.stage_not_found(attempt.run_id, attempt.stage_id)
    conn.execute(_INSERT_ATTEMPT, rows.attempt_to_row(attempt))
    insert_event(conn, run_id=attempt.run_id, entity="attempt", entity_id=attempt.id,
                 from_state=None, to_state=attempt.state, reason="", at=attempt.created_at)


def update_attempt(conn: sa.Connection, *, attempt_id: str, fields: dict[str, Any]) -> runs.Attempt:
    row = _locked(conn, _LOCK_ATTEMPT, pk_id=attempt_id)
    if row is None:
        raise changes.attempt_not_found(attempt_id)
    values = rows.field_values(fields)
    if values:
        conn.execute(_UPDATE_ATTEMPT, {**values, "pk_id": attempt_id})
        engines.notice(conn, W.Channel.UPLOAD, attempt_id)
    return rows.attempt_from_row({**row, **values})


def transition_attempt(
    conn: sa.Connection,
    *,
    attempt_id: str,
    to: states.AttemptState,
    reason: str,
    fields: dict[str, Any],
) -> runs.Attempt:
    now = runs.utcnow()
    values = _changes(to, now, fields)
    current, moved = _move(conn, _ATTEMPT_ROWS, to=to, values=values, pk={"pk_id": attempt_id},
                           what=changes.attempt_what(attempt_id), missing=lambda: changes.attempt_not_found(attempt_id))
    insert_event(conn, run_id=moved["run_id"], entity="attempt", entity_id=attempt_id,
                 from_state=current, to_state=to, reason=reason, at=now)
    return rows.attempt_from_row(moved)


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
