"""State moves of many runs in one transaction: group commit for the drivers' writes.

Every driver write (``Store.apply``: an attempt recorded, started, ended, its stage's and run's
moves) used to be a transaction of its own: on PostgreSQL ``BEGIN``, a statement per move, the
tail, ``COMMIT``, so about fourteen round trips per no-op run, which were most of the CPU per
run in this process and in PostgreSQL. Here the writes that arrive while a batch is in flight go
together in the next one (``Batches``, as ``audit_rows`` does for audit rows), and a batch is a
handful of statements whatever its size, the same on SQLite and PostgreSQL:

1. lock and read every row the batch moves, a statement per table, in a fixed order (attempts,
   stages, runs, each sorted by key: two batches, or a batch and a single move that locks a
   child row before its run's, never wait on each other in a cycle). The run rows are locked
   ``FOR UPDATE``: that is the fence check of every group, and it holds off an adoption until the
   commit (``fencing``: an adoption committed first shows here as a newer generation). On
   SQLite, which locks the whole database from the transaction's start, the fence columns of
   the runs come with their stages, in one read;
2. check each *group* (one caller's moves and fence) in Python against those rows, in arrival
   order: its fence, then each move with ``domain.states.check`` as the one-move path does. A
   group that fails changes nothing and gets its own error (``LeaseLostError`` first, as
   everywhere), the others go on;
3. write what the groups that passed changed: on PostgreSQL one statement for every table
   (``pgwrites``: each table's rows as one JSON parameter), on SQLite one executemany ``UPDATE``
   per table and one ``INSERT`` of the new attempts (the attempt count is folded into the
   stage's row); then the events and wake-ups in the transaction's tail.

A batch that the database refuses as a whole (a duplicate id, a value it cannot store, a
deadlock with another writer) is written again one group per transaction, so one bad group
fails only its own caller. A write completes (commits or rolls back) even if its caller is
cancelled, as a transaction does.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy import exc as sa_exc

from kubeline.domain import errors, runs, states
from kubeline.storage import base, changes
from kubeline.storage import wakeups as W
from kubeline.storage.sql import engines, fencing, pgwrites, rows, tails
from kubeline.storage.sql import tables as T
from kubeline.storage.sql import transactions as tx

Record = runs.StageRun | runs.Attempt | runs.Run
MAX_GROUPS = 128  # groups per batch; more wait for the next one

_RUN_COLUMNS = ("state", *sorted(changes.RUN_FIELDS))
_STAGE_COLUMNS = ("state", *sorted(changes.STAGE_FIELDS))
_ATTEMPT_COLUMNS = ("state", *sorted(changes.ATTEMPT_FIELDS))

_LOCK_ATTEMPTS = sa.select(T.attempts).order_by(T.attempts.c.id).with_for_update()
_LOCK_STAGES = (sa.select(T.stage_runs).order_by(T.stage_runs.c.run_id, T.stage_runs.c.stage_id)
                .with_for_update())
_LOCK_RUNS = (sa.select(T.runs.c.id, T.runs.c.owner, T.runs.c.lease_generation).order_by(T.runs.c.id)
              .with_for_update())
_RUN_ROWS = sa.select(*T.RUN_ROW)
# SQLite: stages with their run's fence columns, one read for both (no row locks there: the
# transaction holds the database's write lock from its BEGIN IMMEDIATE)
_STAGES_AND_FENCES = (sa.select(T.stage_runs, T.runs.c.owner.label("fence_owner"),
                                T.runs.c.lease_generation.label("fence_generation"))
                      .join_from(T.stage_runs, T.runs, T.runs.c.id == T.stage_runs.c.run_id)
                      .order_by(T.stage_runs.c.run_id, T.stage_runs.c.stage_id))
_BOUND_KEYS = 8  # keys up to which a read binds each key itself (see _keyed)
_ATTEMPT_KEY = (T.attempts.c.id,)
_STAGE_KEY = (T.stage_runs.c.run_id, T.stage_runs.c.stage_id)
_RUN_KEY = (T.runs.c.id,)
_UPDATE_RUNS = sa.update(T.runs).where(T.runs.c.id == sa.bindparam("pk_id"))
_UPDATE_STAGES = sa.update(T.stage_runs).where(T.stage_runs.c.run_id == sa.bindparam("pk_run_id"),
                                               T.stage_runs.c.stage_id == sa.bindparam("pk_stage_id"))
_UPDATE_ATTEMPTS = sa.update(T.attempts).where(T.attempts.c.id == sa.bindparam("pk_id"))
_INSERT_ATTEMPTS = sa.insert(T.attempts)


@dataclasses.dataclass(frozen=True, kw_only=True)
class Group:
    """One caller's moves, applied all or none, and the fence they carry."""

    moves: Sequence[base.Move]
    fence: base.Fence | None = None


Outcome = list[Record] | errors.KubelineError


@dataclasses.dataclass
class _Rows:
    """The locked rows of a batch as its groups leave them (``None``: no such row)."""

    attempts: dict[str, dict[str, Any]]
    stages: dict[tuple[str, str], dict[str, Any]]
    runs: dict[str, dict[str, Any]]  # id, owner, lease_generation; every column for runs that move


@dataclasses.dataclass
class _Changes:
    """What the groups that passed write."""

    attempts: set[str] = dataclasses.field(default_factory=set)
    stages: set[tuple[str, str]] = dataclasses.field(default_factory=set)
    runs: set[str] = dataclasses.field(default_factory=set)
    new_attempts: list[str] = dataclasses.field(default_factory=list)  # inserted (their rows in ``attempts``)
    events: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    spawn: list[base.NewRun] = dataclasses.field(default_factory=list)


def apply_groups(conn: sa.Connection, *, groups: Sequence[Group], locked: _Rows | None = None) -> list[Outcome]:
    """Apply each group's moves (all or none per group) in this transaction: the records of each
    group's moves, or the error that stopped that group. ``locked``: the rows the groups move,
    read (and their runs locked) by this transaction already; else they are locked and read here."""
    now = runs.utcnow()
    found = _lock(conn, groups) if locked is None else locked
    done = _Changes()
    outcomes: list[Outcome] = []
    for group in groups:
        scratch = _Rows(attempts={}, stages={}, runs={})
        added = _Changes()
        try:
            records = _check_group(group, found=found, scratch=scratch, added=added, now=now)
        except errors.KubelineError as exc:
            outcomes.append(exc)
            continue
        found.attempts.update(scratch.attempts)
        found.stages.update(scratch.stages)
        found.runs.update(scratch.runs)
        done.attempts |= added.attempts
        done.stages |= added.stages
        done.runs |= added.runs
        done.new_attempts += added.new_attempts
        done.events += added.events
        done.spawn += added.spawn
        outcomes.append(records)
    _write(conn, found, done)
    return outcomes


def claim_and_start(
    conn: sa.Connection, *, limit: int, only: list[str] | None, lease: base.Lease | None = None,
    caps: base.ClaimCaps | None = None, start: base.StartMoves | None = None,
) -> list[base.Claimed]:
    """Claim (``transactions.claim_rows``), then apply the moves ``start`` gives each claimed
    run (its first attempts) in the same transaction, a group per run fenced by its new lease
    generation: a run's start costs no batch of its own after the claim (a transaction and its
    round trips less per run). The moves need no locking read: the claim's UPDATE holds the run
    rows, and the rows are those it read (no driver writes a queued run's stages: these runs had
    none until now). A group that fails leaves its run as claimed (``started=None``)."""
    found = tx.claim_rows(conn, limit=limit, only=only, lease=lease, caps=caps)
    claimed = [base.Claimed(run=rows.run_from_row(run), stages=[rows.stage_from_row(s) for s in stages])
               for run, stages in found]
    if start is None or not claimed:
        return claimed
    locked = _Rows(attempts={}, runs={run["id"]: run for run, _ in found},
                   stages={(s["run_id"], s["stage_id"]): s for _, stages in found for s in stages})
    groups: list[tuple[int, Group]] = []
    for at, new in enumerate(claimed):
        try:
            moves = start(new.run, new.stages)
        except errors.KubelineError:  # its driver makes (and reports) them
            continue
        if moves:
            fence = None if lease is None else base.Fence(run_id=new.run.id, generation=new.run.lease_generation)
            groups.append((at, Group(moves=moves, fence=fence)))
    if not groups:
        return claimed
    outcomes = apply_groups(conn, groups=[group for _, group in groups], locked=locked)
    for (at, _), outcome in zip(groups, outcomes, strict=True):
        if not isinstance(outcome, errors.KubelineError):
            claimed[at] = dataclasses.replace(claimed[at], started=outcome)
    return claimed


@dataclasses.dataclass
class _Keys:
    """The rows a batch's groups move (``_lock`` reads them)."""

    attempts: set[str] = dataclasses.field(default_factory=set)
    stages: set[tuple[str, str]] = dataclasses.field(default_factory=set)
    runs: set[str] = dataclasses.field(default_factory=set)  # fenced or moving
    moving_runs: set[str] = dataclasses.field(default_factory=set)  # read whole


def _keys(groups: Sequence[Group]) -> _Keys:
    keys = _Keys()
    for group in groups:
        if group.fence is not None:
            keys.runs.add(group.fence.run_id)
        for move in group.moves:
            if isinstance(move, base.AttemptMove):
                keys.attempts.add(move.attempt_id)
            elif isinstance(move, base.StageMove):
                keys.stages.add((move.run_id, move.stage_id))
                keys.runs.add(move.run_id)
            elif isinstance(move, base.RunMove):
                keys.moving_runs.add(move.run_id)
                keys.runs.add(move.run_id)
            else:
                keys.stages.add((move.attempt.run_id, move.attempt.stage_id))
                keys.runs.add(move.attempt.run_id)
    return keys


def _lock(conn: sa.Connection, groups: Sequence[Group]) -> _Rows:
    keys = _keys(groups)
    found = _Rows(attempts={}, stages={}, runs={})
    if keys.attempts:
        found.attempts = {r["id"]: dict(r) for r in _keyed(conn, _LOCK_ATTEMPTS, _ATTEMPT_KEY, sorted(keys.attempts))}
    if keys.stages and conn.dialect.name == "sqlite":  # a read less per batch (see above)
        for r in _keyed(conn, _STAGES_AND_FENCES, _STAGE_KEY, sorted(keys.stages)):
            stage = dict(r)
            fence = {"id": stage["run_id"], "owner": stage.pop("fence_owner"),
                     "lease_generation": stage.pop("fence_generation")}
            found.stages[(stage["run_id"], stage["stage_id"])] = stage
            found.runs.setdefault(stage["run_id"], fence)
    elif keys.stages:
        found.stages = {(r["run_id"], r["stage_id"]): dict(r)
                        for r in _keyed(conn, _LOCK_STAGES, _STAGE_KEY, sorted(keys.stages))}
    unread = keys.runs.difference(found.runs)
    if unread:
        found.runs.update((r["id"], dict(r)) for r in _keyed(conn, _LOCK_RUNS, _RUN_KEY, sorted(unread)))
    if keys.moving_runs:  # locked just now
        for r in _keyed(conn, _RUN_ROWS, _RUN_KEY, sorted(keys.moving_runs)):
            found.runs[r["id"]] = dict(r)
    return found


def _keyed(conn: sa.Connection, select: sa.Select[Any], columns: tuple[sa.ColumnElement[Any], ...],
           keys: Sequence[Any]) -> sa.engine.MappingResult:
    """The rows of ``select`` whose ``columns`` are one of ``keys`` (values; tuples for several
    columns). A handful of keys (a chain's stage: one attempt, two stages, one run) are bound one
    by one, in a statement per count that SQLAlchemy compiles once: an expanding IN renders its
    statement's SQL again on every execution, which made these reads cost twice as much (~40
    against ~20 us each on SQLite)."""
    if len(keys) > _BOUND_KEYS:
        return conn.execute(_bound(select, columns, 0), {"keys": list(keys)}).mappings()
    rows = keys if len(columns) > 1 else [(key,) for key in keys]
    params = {f"k{n}_{i}": part for n, row in enumerate(rows) for i, part in enumerate(row)}
    return conn.execute(_bound(select, columns, len(keys)), params).mappings()


@functools.cache
def _bound(select: sa.Select[Any], columns: tuple[sa.ColumnElement[Any], ...], count: int) -> sa.Select[Any]:
    """``select`` where ``columns`` are one of ``count`` keys, each bound by name (0: any number,
    one expanding parameter ``keys``); see ``_keyed``."""
    column = sa.tuple_(*columns) if len(columns) > 1 else columns[0]
    if not count:
        return select.where(column.in_(sa.bindparam("keys", expanding=True)))
    if len(columns) == 1:
        return select.where(column.in_([sa.bindparam(f"k{n}_0") for n in range(count)]))
    return select.where(column.in_(
        [sa.tuple_(*(sa.bindparam(f"k{n}_{i}") for i in range(len(columns)))) for n in range(count)]))


@dataclasses.dataclass(frozen=True, kw_only=True)
class _Kind:
    """How a state move of one kind of row is checked and recorded (``_check_group``)."""

    table: str  # the field of ``_Rows`` and ``_Changes`` holding these rows
    entity: str  # the event's entity
    state: Callable[[str], Any]  # the stored state's enum
    key: Callable[[Any], Any]  # the move -> its row's key
    entity_id: Callable[[Any], str]
    run_of: Callable[[dict[str, Any]], str]  # the row -> its run's id
    what: Callable[[Any], str]  # the key -> how errors name the row
    missing: Callable[[_Rows, Any], errors.KubelineError]
    record: Callable[[dict[str, Any]], Record]


_KINDS: dict[type, _Kind] = {
    base.StageMove: _Kind(table="stages", entity="stage", state=states.StageState,
                          key=lambda m: (m.run_id, m.stage_id), entity_id=lambda m: m.stage_id,
                          run_of=lambda r: r["run_id"], what=lambda k: changes.stage_what(*k),
                          missing=lambda found, k: _stage_missing(found, *k), record=rows.stage_from_row),
    base.AttemptMove: _Kind(table="attempts", entity="attempt", state=states.AttemptState,
                            key=lambda m: m.attempt_id, entity_id=lambda m: m.attempt_id,
                            run_of=lambda r: r["run_id"], what=changes.attempt_what,
                            missing=lambda found, k: changes.attempt_not_found(k), record=rows.attempt_from_row),
    base.RunMove: _Kind(table="runs", entity="run", state=states.RunState,
                        key=lambda m: m.run_id, entity_id=lambda m: m.run_id,
                        run_of=lambda r: r["id"], what=changes.run_what,
                        missing=lambda found, k: changes.run_not_found(k), record=rows.run_from_row),
}


def _check_group(group: Group, *, found: _Rows, scratch: _Rows, added: _Changes, now: Any) -> list[Record]:
    """The group's records, its changes in ``scratch`` and ``added``; raises what stops it."""
    if group.fence is not None:
        fencing.check(group.fence, found.runs.get(group.fence.run_id))
    records: list[Record] = []
    for move in group.moves:
        if isinstance(move, base.NewAttempt):
            attempt = move.attempt
            key = (attempt.run_id, attempt.stage_id)
            stage = scratch.stages.get(key) or found.stages.get(key)
            if stage is None:
                raise _stage_missing(found, *key)
            scratch.stages[key] = {**stage, "attempts": stage["attempts"] + 1}
            added.stages.add(key)
            scratch.attempts[attempt.id] = rows.attempt_to_row(attempt)
            added.new_attempts.append(attempt.id)
            added.events.append(tx.event_row(run_id=attempt.run_id, entity="attempt", entity_id=attempt.id,
                                             from_state=None, to_state=attempt.state, reason="",
                                             at=attempt.created_at))
            records.append(attempt)
            continue
        kind = _KINDS[type(move)]
        key = kind.key(move)
        table, scratch_table = getattr(found, kind.table), getattr(scratch, kind.table)
        row = scratch_table.get(key) or table.get(key)
        if row is None:
            raise kind.missing(found, key)
        before = kind.state(row["state"])
        states.check(before, move.to, what=kind.what(key))
        scratch_table[key] = moved = {**row, **tx.changed_values(move.to, now, move.fields)}
        getattr(added, kind.table).add(key)
        added.events.append(tx.event_row(run_id=kind.run_of(moved), entity=kind.entity, entity_id=kind.entity_id(move),
                                         from_state=before, to_state=move.to, reason=move.reason, at=now))
        if isinstance(move, base.RunMove):
            added.spawn += move.spawn
        records.append(kind.record(moved))
    return records


def _stage_missing(found: _Rows, run_id: str, stage_id: str) -> errors.KubelineError:
    """The error for a stage row that is not there: its run's when the run is missing too."""
    return changes.stage_not_found(run_id, stage_id) if run_id in found.runs else changes.run_not_found(run_id)


def _write(conn: sa.Connection, found: _Rows, done: _Changes) -> None:
    if conn.dialect.name == "postgresql":
        _write_pg(conn, found, done)
    else:
        _write_each(conn, found, done)
    for run_id in dict.fromkeys(e["run_id"] for e in done.events):
        engines.notice(conn, W.Channel.EVENTS, run_id)
    if any(states.is_final(states.RunState(found.runs[run_id]["state"])) for run_id in done.runs):
        engines.notice(conn, W.Channel.DISPATCH)  # a slot of its pipeline (and the caps) is free
    tx.add_events(conn, done.events)
    for new in done.spawn:
        tx.create_run(conn, run=new.run, stages=new.stages)


def _write_pg(conn: sa.Connection, found: _Rows, done: _Changes) -> None:
    """One statement (``pgwrites``): each table's rows as one JSON parameter."""
    moved = sorted(done.attempts.difference(done.new_attempts))
    if not (done.runs or done.stages or done.new_attempts or moved):
        return
    conn.execute(pgwrites.statement(_RUN_COLUMNS, _STAGE_COLUMNS, _ATTEMPT_COLUMNS), {
        "run_rows": pgwrites.as_json({"id": run_id, **{c: found.runs[run_id][c] for c in _RUN_COLUMNS}}
                                     for run_id in sorted(done.runs)),
        "stage_rows": pgwrites.as_json({"run_id": key[0], "stage_id": key[1],
                                        **{c: found.stages[key][c] for c in _STAGE_COLUMNS}}
                                       for key in sorted(done.stages)),
        "new_attempts": pgwrites.as_json(found.attempts[attempt_id] for attempt_id in done.new_attempts),
        "attempt_rows": pgwrites.as_json({"id": attempt_id, **{c: found.attempts[attempt_id][c]
                                                               for c in _ATTEMPT_COLUMNS}} for attempt_id in moved),
    })


def _write_each(conn: sa.Connection, found: _Rows, done: _Changes) -> None:
    """A statement per table (SQLite: a round trip there is a function call)."""
    if done.runs:
        conn.execute(_UPDATE_RUNS, [{"pk_id": run_id, **{c: found.runs[run_id][c] for c in _RUN_COLUMNS}}
                                    for run_id in sorted(done.runs)])
    if done.stages:
        conn.execute(_UPDATE_STAGES, [{"pk_run_id": key[0], "pk_stage_id": key[1],
                                       **{c: found.stages[key][c] for c in _STAGE_COLUMNS}}
                                      for key in sorted(done.stages)])
    if done.new_attempts:
        conn.execute(_INSERT_ATTEMPTS, [found.attempts[attempt_id] for attempt_id in done.new_attempts])
    moved = sorted(done.attempts.difference(done.new_attempts))
    if moved:
        conn.execute(_UPDATE_ATTEMPTS, [{"pk_id": attempt_id, **{c: found.attempts[attempt_id][c]
                                                                 for c in _ATTEMPT_COLUMNS}} for attempt_id in moved])


class Batches:
    """Group commit of ``Group``s: the first caller writes, callers that arrive meanwhile queue
    and go together in the next batch; each returns once its group is committed (or with its
    own error): a task of its own writes (``_write_pending``) and every caller waits for it. On
    SQLite the first caller lets the loop turn once first: still alone then (a chain's next
    stage, not a burst), it writes itself on the loop's thread (``Database.run_now``: no task,
    a turn less: 1.17 -> 0.9 ms per stage of a chain); callers queued behind it go to the task
    as before (writing a burst's batch in the caller cost ~20% of SQLite's burst rate here)."""

    def __init__(self, database: engines.Database) -> None:
        self.database = database
        self._pending: list[tuple[Group, asyncio.Future[list[Record]]]] = []
        self._drain: asyncio.Future[None] | None = None
        self._gathering = False  # a first caller lets the loop turn before it writes

    async def apply(self, group: Group) -> list[Record]:
        mine: asyncio.Future[list[Record]] = asyncio.get_running_loop().create_future()
        self._pending.append((group, mine))
        cancelled = False
        if not self._gathering and (self._drain is None or self._drain.done()):  # else taken along
            if self.database.dialect == "sqlite":  # only SQLite writes at once
                self._gathering = True
                try:
                    await asyncio.sleep(0)
                except asyncio.CancelledError:  # its write still goes (below), as a transaction's
                    cancelled = True
                finally:
                    self._gathering = False
                if not cancelled and len(self._pending) == 1:  # alone: no batch to wait for
                    self._write_alone()
            if self._pending:
                self._drain = asyncio.ensure_future(self._write_pending())
        while not mine.done():  # a cancelled caller still waits for its write, as a transaction
            try:
                await asyncio.wait([mine])
            except asyncio.CancelledError:
                cancelled = True
        if cancelled:
            raise asyncio.CancelledError
        return mine.result()

    def _write_alone(self) -> None:
        """Write the one queued group in a transaction on this thread, if the database can write
        at once; else leave it to ``_write_pending``."""
        [(group, future)] = self._pending
        try:
            with _conflicts([group]):
                outcome: list[Record] | BaseException = self.database.run_now(_transaction([group]))[0]
        except engines.WouldWait:
            return
        except Exception as exc:
            outcome = exc
        self._pending.clear()
        _settle(future, outcome)

    async def _write_pending(self) -> None:
        while self._pending:
            batch, self._pending = self._pending[:MAX_GROUPS], self._pending[MAX_GROUPS:]
            try:
                outcomes = await self._run([group for group, _ in batch])
            except Exception as exc:
                if len(batch) == 1:
                    _settle(batch[0][1], exc)
                    continue
                for group, future in batch:  # one bad group must not cost the others their writes
                    try:
                        _settle(future, (await self._run([group]))[0])
                    except Exception as alone:
                        _settle(future, alone)
                continue
            except BaseException as exc:  # the loop is stopping: nobody may wait for ever
                for _, future in [*batch, *self._pending]:
                    _settle(future, RuntimeError(f"the write was interrupted ({type(exc).__name__})"))
                self._pending = []
                raise
            for (_, future), outcome in zip(batch, outcomes, strict=True):
                _settle(future, outcome)

    async def _run(self, groups: list[Group]) -> list[Outcome]:
        with _conflicts(groups):
            return await self.database.run(_transaction(groups), write=True)


def _transaction(groups: list[Group]) -> Callable[[sa.Connection], list[Outcome]]:
    return tails.deferred(functools.partial(apply_groups, groups=groups))


@contextlib.contextmanager
def _conflicts(groups: list[Group]) -> Iterator[None]:
    """A failed constraint of a lone group as what it means (``_conflict``)."""
    try:
        yield
    except sa_exc.IntegrityError:
        conflict = _conflict(groups)
        if conflict is None:
            raise
        raise conflict from None


def _conflict(groups: list[Group]) -> errors.KubelineError | None:
    """What a failed constraint of a lone group means: a run or attempt it adds exists already."""
    if len(groups) > 1:
        return None
    moves = groups[0].moves
    new_ids = [m.attempt.id for m in moves if isinstance(m, base.NewAttempt)]
    spawned = [new.run.id for m in moves if isinstance(m, base.RunMove) for new in m.spawn]
    if spawned and not new_ids:
        return changes.run_exists(", ".join(spawned))
    return changes.attempt_exists(", ".join(new_ids))


def _settle(future: asyncio.Future[list[Record]], outcome: list[Record] | BaseException) -> None:
    if future.done():
        return
    if isinstance(outcome, BaseException):
        future.set_exception(outcome)
    else:
        future.set_result(outcome)
