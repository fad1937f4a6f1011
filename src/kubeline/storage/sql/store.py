"""``SqlStore``: the Store port on SQLAlchemy Core (SQLite by default, PostgreSQL in production).

Each method is one transaction: a function from ``transactions`` (or a small query here) run by
``engines.Database.run``. Reads map rows to frozen records with ``rows``; the run's spec is
validated again on the way out.
"""

from __future__ import annotations

import builtins
import datetime as dt
import functools
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy import exc as sa_exc
from sqlalchemy.dialects import postgresql, sqlite

from kubeline.domain import runs, states
from kubeline.storage import base, changes
from kubeline.storage import wakeups as wakeups_
from kubeline.storage.sql import (
    accounts,
    batches,
    claims,
    engines,
    intake,
    listener,
    migrate,
    rows,
    scheduling,
    stats,
    tails,
)
from kubeline.storage.sql import tables as T
from kubeline.storage.sql import transactions as tx

_T = TypeVar("_T")
_COUNT_IN_STATE = sa.select(sa.func.count()).select_from(T.runs).where(T.runs.c.state == sa.bindparam("state"))


class SqlStore(scheduling.SchedulingMethods, stats.StatsMethods):
    def __init__(self, database: engines.Database) -> None:
        self.database = database
        self.wakeups: wakeups_.Wakeups = database.wakeups
        self.listener: listener.Listener | None = None
        self.accounts = accounts.Accounts(database)
        self.batches = batches.Batches(database)

    @classmethod
    async def open(cls, url: str | sa.URL, *, migrate: bool = True) -> SqlStore:
        """Connect, and migrate to the head revision unless ``migrate=False``; on PostgreSQL,
        start listening for the wake-ups of other processes."""
        database = engines.open_database(url)
        try:
            if migrate:
                await _upgrade(database)
        except BaseException:
            await database.dispose()
            raise
        store = cls(database)
        if isinstance(database, engines.AsyncDatabase) and database.dialect == "postgresql":
            store.listener = listener.Listener(database=database)
            await store.listener.start()
        return store

    async def close(self) -> None:
        if self.listener is not None:
            await self.listener.stop()
        await self.database.dispose()

    async def current_revision(self) -> str | None:
        return await migrate.database_revision(self.database)

    async def is_current(self) -> bool:
        """For ``/readyz``: the schema is at the head revision."""
        return await self.current_revision() == migrate.head_revision()

    async def _write(self, fn: Callable[..., _T], /, **kwargs: Any) -> _T:
        return await self.database.run(tails.deferred(functools.partial(fn, **kwargs)), write=True)

    async def _rows(self, query: sa.Select[Any]) -> builtins.list[sa.RowMapping]:
        return await self.database.run(
            lambda conn: list(conn.execute(query).mappings()), write=False
        )

    def _insert(self, table: sa.Table) -> postgresql.Insert | sqlite.Insert:
        if self.database.dialect == "sqlite":
            return sqlite.insert(table)
        return postgresql.insert(table)

    # pipelines -----------------------------------------------------------------------------
    async def upsert_pipeline(self, pipeline: runs.Pipeline) -> None:
        values = rows.pipeline_to_row(pipeline)
        stmt = self._insert(T.pipelines).values(values)
        stmt = stmt.on_conflict_do_update(
            index_elements=[T.pipelines.c.name],
            set_={k: v for k, v in values.items() if k != "name"},
        )
        await self.database.run(lambda conn: conn.execute(stmt), write=True)

    async def get_pipeline(self, name: str) -> runs.Pipeline:
        found = await self._rows(sa.select(T.pipelines).where(T.pipelines.c.name == name))
        if not found:
            raise changes.pipeline_not_found(name)
        return rows.pipeline_from_row(found[0])

    async def list_pipelines(self) -> builtins.list[runs.Pipeline]:
        found = await self._rows(sa.select(T.pipelines).order_by(T.pipelines.c.name))
        return [rows.pipeline_from_row(r) for r in found]

    async def delete_pipeline(self, name: str) -> None:
        stmt = sa.delete(T.pipelines).where(T.pipelines.c.name == name)
        deleted = await self.database.run(lambda conn: conn.execute(stmt).rowcount, write=True)
        if not deleted:
            raise changes.pipeline_not_found(name)

    # runs ----------------------------------------------------------------------------------
    async def create_run(self, run: runs.Run, stages: builtins.list[runs.StageRun], *,
                         audit: dict[str, Any] | None = None) -> runs.Run:
        changes.check_new_run(run, stages)
        try:
            if audit is None:
                await self._write(tx.create_run, run=run, stages=stages)
            elif self.database.dialect == "postgresql" and intake.one_statement(stages):
                # one statement, atomic in autocommit: no BEGIN and COMMIT round trips
                await self.database.run(functools.partial(intake.create_run_pg, run=run, stages=stages, audit=audit),
                                        write=False)
                self.database.wakeups.deliver([(wakeups_.Channel.DISPATCH, "")])
            else:
                await self._write(intake.create_run_tx, run=run, stages=stages, audit=audit)
        except sa_exc.IntegrityError:
            raise changes.run_exists(run.id) from None
        return run

    async def get_run(self, run_id: str) -> runs.Run:
        found = await self._rows(sa.select(*T.RUN_ROW).where(T.runs.c.id == run_id))
        if not found:
            raise changes.run_not_found(run_id)
        return rows.run_from_row(found[0])

    async def list_runs(
        self,
        *,
        pipeline: str | None = None,
        states_in: builtins.list[states.RunState] | None = None,
        limit: int = 50,
        before: str | None = None,
    ) -> builtins.list[runs.Run]:
        query = sa.select(*T.RUN_ROW).order_by(T.runs.c.id.desc()).limit(max(limit, 0))
        if pipeline is not None:
            query = query.where(T.runs.c.pipeline == pipeline)
        if states_in is not None:
            query = query.where(T.runs.c.state.in_([s.value for s in states_in]))
        if before is not None:
            query = query.where(T.runs.c.id < before)
        return [rows.run_from_row(r) for r in await self._rows(query)]

    async def transition_run(
        self, run_id: str, to: states.RunState, *, reason: str = "", spawn: Sequence[base.NewRun] = (),
        fence: base.Fence | None = None, **fields: Any
    ) -> runs.Run:
        moved = await self.apply([base.RunMove(run_id=run_id, to=to, reason=reason, fields=fields, spawn=list(spawn))],
                                 fence=fence)
        return _as(runs.Run, moved[0])

    async def count_runs(self, *, states_in: Sequence[states.RunState] | None = None) -> dict[states.RunState, int]:
        if states_in is not None:  # a plain COUNT per state: no grouping key compared per row
            def count(conn: sa.Connection) -> builtins.list[tuple[str, int]]:
                return [(s.value, int(conn.execute(_COUNT_IN_STATE, {"state": s.value}).scalar_one()))
                        for s in dict.fromkeys(states_in)]

            return {states.RunState(state): n for state, n in await self.database.run(count, write=False) if n}
        query = sa.select(T.runs.c.state, sa.func.count()).group_by(T.runs.c.state)
        found = await self.database.run(lambda conn: conn.execute(query).all(), write=False)
        return {states.RunState(state): int(count) for state, count in found}

    async def request_cancel(self, run_id: str) -> runs.Run:
        return await self._write(tx.request_cancel, run_id=run_id)

    async def claim_queued_runs(
        self, *, limit: int, only: builtins.list[str] | None = None, lease: base.Lease | None = None,
        caps: base.ClaimCaps | None = None,
    ) -> builtins.list[runs.Run]:
        return [c.run for c in await self.claim_runs(limit=limit, only=only, lease=lease, caps=caps)]

    async def claim_runs(
        self, *, limit: int, only: builtins.list[str] | None = None, lease: base.Lease | None = None,
        caps: base.ClaimCaps | None = None, start: base.StartMoves | None = None,
    ) -> builtins.list[base.Claimed]:
        return await self._write(batches.claim_and_start, limit=limit, only=only, lease=lease, caps=caps,
                                 start=None if start is None else _checked_start(start))

    async def renew_leases(self, lease: base.Lease, fences: Sequence[base.Fence]) -> builtins.list[str]:
        return await self._write(claims.renew, lease=lease, fences=list(fences))

    async def release_leases(self, fences: Sequence[base.Fence]) -> None:
        await self._write(claims.release, fences=list(fences))

    async def adopt_runs(
        self, lease: base.Lease, *, limit: int, only: builtins.list[str] | None = None,
        reclaim_before: dt.datetime | None = None, exclude: Sequence[str] = (),
    ) -> builtins.list[runs.Run]:
        return await self._write(tx.adopt_runs, lease=lease, limit=limit, only=only, reclaim_before=reclaim_before,
                                 exclude=list(exclude))

    # stages --------------------------------------------------------------------------------
    async def list_stage_runs(self, run_id: str) -> builtins.list[runs.StageRun]:
        return await self.database.run(
            functools.partial(tx.list_stage_runs, run_id=run_id), write=False
        )

    async def transition_stage(
        self, run_id: str, stage_id: str, to: states.StageState, *, reason: str = "",
        fence: base.Fence | None = None, **fields: Any
    ) -> runs.StageRun:
        moved = await self.apply([base.StageMove(run_id=run_id, stage_id=stage_id, to=to, reason=reason,
                                                 fields=fields)], fence=fence)
        return _as(runs.StageRun, moved[0])

    # attempts ------------------------------------------------------------------------------
    async def create_attempt(self, attempt: runs.Attempt) -> runs.Attempt:
        await self.apply([base.NewAttempt(attempt=attempt)])
        return attempt

    async def get_attempt(self, attempt_id: str) -> runs.Attempt:
        found = await self._rows(sa.select(T.attempts).where(T.attempts.c.id == attempt_id))
        if not found:
            raise changes.attempt_not_found(attempt_id)
        return rows.attempt_from_row(found[0])

    async def list_attempts(
        self, run_id: str, *, stage_id: str | None = None
    ) -> builtins.list[runs.Attempt]:
        query = (
            sa.select(T.attempts)
            .where(T.attempts.c.run_id == run_id)
            .order_by(T.attempts.c.created_at, T.attempts.c.id)
        )
        if stage_id is not None:
            query = query.where(T.attempts.c.stage_id == stage_id)
        return [rows.attempt_from_row(r) for r in await self._rows(query)]

    async def update_attempt(self, attempt_id: str, **fields: Any) -> runs.Attempt:
        changes.check_fields(changes.attempt_what(attempt_id), fields, changes.ATTEMPT_FIELDS)
        return await self._write(tx.update_attempt, attempt_id=attempt_id, fields=fields)

    async def transition_attempt(
        self, attempt_id: str, to: states.AttemptState, *, reason: str = "", fence: base.Fence | None = None,
        **fields: Any
    ) -> runs.Attempt:
        moved = await self.apply([base.AttemptMove(attempt_id=attempt_id, to=to, reason=reason, fields=fields)],
                                 fence=fence)
        return _as(runs.Attempt, moved[0])

    async def apply(
        self, moves: Sequence[base.Move], *, fence: base.Fence | None = None
    ) -> builtins.list[runs.StageRun | runs.Attempt | runs.Run]:
        _check_moves(moves)
        return await self.batches.apply(batches.Group(moves=list(moves), fence=fence))

    async def list_live_attempts(self) -> builtins.list[runs.Attempt]:
        live = [states.AttemptState.PENDING.value, states.AttemptState.RUNNING.value]
        query = (
            sa.select(T.attempts)
            .where(T.attempts.c.state.in_(live))
            .order_by(T.attempts.c.created_at, T.attempts.c.id)
        )
        return [rows.attempt_from_row(r) for r in await self._rows(query)]

    # events --------------------------------------------------------------------------------
    async def list_events(self, run_id: str, *, after: int = 0) -> builtins.list[runs.Event]:
        return await self.database.run(
            functools.partial(tx.list_events, run_id=run_id, after=after), write=False
        )

    # secrets -------------------------------------------------------------------------------
    async def put_secret(self, name: str, ciphertext: bytes) -> None:
        now = runs.utcnow()
        stmt = self._insert(T.secrets).values(
            name=name, ciphertext=bytes(ciphertext), created_at=now, updated_at=now
        )
        stmt = stmt.on_conflict_do_update(
            index_elements=[T.secrets.c.name],
            set_={"ciphertext": bytes(ciphertext), "updated_at": now},
        )
        await self.database.run(lambda conn: conn.execute(stmt), write=True)

    async def get_secret(self, name: str) -> runs.Secret:
        found = await self._rows(sa.select(T.secrets).where(T.secrets.c.name == name))
        if not found:
            raise changes.secret_not_found([name])
        return rows.secret_from_row(found[0])

    async def list_secrets(self) -> builtins.list[str]:
        found = await self._rows(sa.select(T.secrets.c.name).order_by(T.secrets.c.name))
        return [r["name"] for r in found]

    async def delete_secret(self, name: str) -> None:
        stmt = sa.delete(T.secrets).where(T.secrets.c.name == name)
        deleted = await self.database.run(lambda conn: conn.execute(stmt).rowcount, write=True)
        if not deleted:
            raise changes.secret_not_found([name])


def _check_moves(moves: Sequence[base.Move]) -> None:
    """What ``apply`` refuses before a batch: fields a row does not have, a new attempt not pending."""
    for move in moves:
        if isinstance(move, base.StageMove):
            changes.check_fields(changes.stage_what(move.run_id, move.stage_id), move.fields, changes.STAGE_FIELDS)
        elif isinstance(move, base.AttemptMove):
            changes.check_fields(changes.attempt_what(move.attempt_id), move.fields, changes.ATTEMPT_FIELDS)
        elif isinstance(move, base.RunMove):
            changes.check_fields(changes.run_what(move.run_id), move.fields, changes.RUN_FIELDS)
            for new in move.spawn:
                changes.check_new_run(new.run, new.stages)
        elif move.attempt.state is not states.AttemptState.PENDING:
            raise changes.must_be_new(changes.attempt_what(move.attempt.id), move.attempt.state.value, "pending")


def _checked_start(start: base.StartMoves) -> base.StartMoves:
    """``start`` whose moves pass the checks ``apply`` makes before a batch (a bad move raises,
    and leaves its run's start to its driver)."""
    def checked(run: runs.Run, stages: builtins.list[runs.StageRun]) -> builtins.list[base.Move]:
        moves = start(run, stages)
        _check_moves(moves)
        return moves

    return checked


def _as(kind: type[_T], record: object) -> _T:
    assert isinstance(record, kind), f"the store made {type(record).__name__}, expected {kind.__name__}"
    return record


async def _upgrade(database: engines.Database) -> None:
    await migrate.upgrade_database(database)
