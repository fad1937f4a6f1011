"""``MemoryStore``: the Store port in memory, the fake that ships with the package.

Same semantics as ``storage.sql.SqlStore`` (the contract tests run one suite over both):
transitions checked by ``domain.states.check`` against the stored state, one event per change,
the same errors. Records are copied on the way in and out so callers cannot alias stored
dicts, just as rows read from a database are fresh objects.
"""

from __future__ import annotations

import builtins
import copy
import dataclasses
import datetime as dt
from collections.abc import Sequence
from typing import Any, TypeVar

from kubeline.domain import runs, states
from kubeline.storage import base, changes, memory_scheduling

_T = TypeVar("_T")


def _detach(record: _T) -> _T:
    """A copy whose dict fields are not shared with the caller (specs are immutable already)."""
    mutable = {
        f.name: copy.deepcopy(getattr(record, f.name))
        for f in dataclasses.fields(record)  # type: ignore[arg-type]
        if isinstance(getattr(record, f.name), dict)
    }
    return dataclasses.replace(record, **mutable) if mutable else record  # type: ignore[type-var]


class MemoryStore(memory_scheduling.SchedulingMethods):
    """An in-process Store; ``events`` and the record dicts are public for assertions in tests."""

    def __init__(self) -> None:
        memory_scheduling.SchedulingMethods.__init__(self)
        self.pipelines: dict[str, runs.Pipeline] = {}
        self.runs: dict[str, runs.Run] = {}
        self.stages: dict[str, dict[str, runs.StageRun]] = {}
        self.attempts: dict[str, runs.Attempt] = {}
        self.events: builtins.list[runs.Event] = []
        self.secrets: dict[str, runs.Secret] = {}
        self.closed = False

    async def close(self) -> None:
        self.closed = True

    # pipelines -----------------------------------------------------------------------------
    async def upsert_pipeline(self, pipeline: runs.Pipeline) -> None:
        self.pipelines[pipeline.name] = pipeline

    async def get_pipeline(self, name: str) -> runs.Pipeline:
        try:
            return self.pipelines[name]
        except KeyError:
            raise changes.pipeline_not_found(name) from None

    async def list_pipelines(self) -> builtins.list[runs.Pipeline]:
        return [self.pipelines[name] for name in sorted(self.pipelines)]

    async def delete_pipeline(self, name: str) -> None:
        if self.pipelines.pop(name, None) is None:
            raise changes.pipeline_not_found(name)

    # runs ----------------------------------------------------------------------------------
    async def create_run(self, run: runs.Run, stages: builtins.list[runs.StageRun]) -> runs.Run:
        if run.state is not states.RunState.QUEUED:
            raise changes.must_be_new(changes.run_what(run.id), run.state.value, "queued")
        if run.id in self.runs:
            raise changes.run_exists(run.id)
        for stage in stages:
            if stage.run_id != run.id:
                raise changes.foreign_stage(run.id, stage.run_id, stage.stage_id)
        self.runs[run.id] = _detach(run)
        self.stages[run.id] = {s.stage_id: _detach(s) for s in stages}
        self._event(run_id=run.id, entity="run", entity_id=run.id, from_state=None,
                    to_state=run.state, reason="", at=run.created_at)
        return _detach(run)

    async def get_run(self, run_id: str) -> runs.Run:
        return _detach(self._run(run_id))

    async def list_runs(
        self,
        *,
        pipeline: str | None = None,
        states_in: builtins.list[states.RunState] | None = None,
        limit: int = 50,
        before: str | None = None,
    ) -> builtins.list[runs.Run]:
        found = [
            r for r in self.runs.values()
            if (pipeline is None or r.pipeline == pipeline)
            and (states_in is None or r.state in states_in)
            and (before is None or r.id < before)
        ]
        found.sort(key=lambda r: r.id, reverse=True)
        return [_detach(r) for r in found[: max(limit, 0)]]

    async def transition_run(
        self, run_id: str, to: states.RunState, *, reason: str = "", **fields: Any
    ) -> runs.Run:
        what = changes.run_what(run_id)
        changes.check_fields(what, fields, changes.RUN_FIELDS)
        run = self._run(run_id)
        states.check(run.state, to, what=what)
        now = runs.utcnow()
        updated = dataclasses.replace(
            run, state=to, **{**base.fields_for_state(to, now), **copy.deepcopy(fields)}
        )
        self.runs[run_id] = updated
        self._event(run_id=run_id, entity="run", entity_id=run_id, from_state=run.state,
                    to_state=to, reason=reason, at=now)
        return _detach(updated)

    async def request_cancel(self, run_id: str) -> runs.Run:
        run = self._run(run_id)
        if states.is_final(run.state):
            raise changes.cancel_final(run_id, run.state.value)
        if not run.cancel_requested:
            run = dataclasses.replace(run, cancel_requested=True)
            self.runs[run_id] = run
            self._event(run_id=run_id, entity="run", entity_id=run_id, from_state=run.state,
                        to_state=run.state, reason="cancel requested", at=runs.utcnow())
        return _detach(run)

    async def claim_queued_runs(
        self, *, limit: int, only: builtins.list[str] | None = None, lease: base.Lease | None = None,
        caps: base.ClaimCaps | None = None,
    ) -> builtins.list[runs.Run]:
        caps = caps or base.ClaimCaps()
        running: dict[str, int] = {}
        per_executor: dict[str, int] = {}
        for r in self.runs.values():
            if r.state is states.RunState.RUNNING:
                running[r.pipeline] = running.get(r.pipeline, 0) + 1
                executor = self.run_executors.get(r.id, "")
                per_executor[executor] = per_executor.get(executor, 0) + 1
        total = sum(running.values())
        claimed: builtins.list[runs.Run] = []
        for run in sorted(self.runs.values(), key=lambda r: r.id):
            if len(claimed) >= limit or (caps.max_running is not None and total >= caps.max_running):
                break
            if run.state is not states.RunState.QUEUED or (only is not None and run.id not in only):
                continue
            cap = run.spec.max_instances
            if cap is not None and running.get(run.pipeline, 0) >= cap:
                continue
            executor = run.spec.executor or caps.default_executor
            executor_cap = caps.per_executor.get(executor)
            if executor_cap is not None and per_executor.get(executor, 0) >= executor_cap:
                continue
            running[run.pipeline] = running.get(run.pipeline, 0) + 1
            per_executor[executor] = per_executor.get(executor, 0) + 1
            total += 1
            self.run_executors[run.id] = executor
            if lease is not None:
                self.leases[run.id] = lease
            claimed.append(
                await self.transition_run(run.id, states.RunState.RUNNING, reason="claimed")
            )
        return claimed

    # stages --------------------------------------------------------------------------------
    async def list_stage_runs(self, run_id: str) -> builtins.list[runs.StageRun]:
        self._run(run_id)
        return [_detach(s) for s in self.stages[run_id].values()]

    async def transition_stage(
        self, run_id: str, stage_id: str, to: states.StageState, *, reason: str = "", **fields: Any
    ) -> runs.StageRun:
        what = changes.stage_what(run_id, stage_id)
        changes.check_fields(what, fields, changes.STAGE_FIELDS)
        stage = self._stage(run_id, stage_id)
        states.check(stage.state, to, what=what)
        now = runs.utcnow()
        updated = dataclasses.replace(
            stage, state=to, **{**base.fields_for_state(to, now), **copy.deepcopy(fields)}
        )
        self.stages[run_id][stage_id] = updated
        self._event(run_id=run_id, entity="stage", entity_id=stage_id, from_state=stage.state,
                    to_state=to, reason=reason, at=now)
        return _detach(updated)

    # attempts ------------------------------------------------------------------------------
    async def create_attempt(self, attempt: runs.Attempt) -> runs.Attempt:
        what = changes.attempt_what(attempt.id)
        if attempt.state is not states.AttemptState.PENDING:
            raise changes.must_be_new(what, attempt.state.value, "pending")
        stage = self._stage(attempt.run_id, attempt.stage_id)
        key = (attempt.run_id, attempt.stage_id, attempt.number)
        if attempt.id in self.attempts or any(
            (a.run_id, a.stage_id, a.number) == key for a in self.attempts.values()
        ):
            raise changes.attempt_exists(attempt.id)
        self.attempts[attempt.id] = _detach(attempt)
        self.stages[attempt.run_id][attempt.stage_id] = dataclasses.replace(
            stage, attempts=stage.attempts + 1
        )
        self._event(run_id=attempt.run_id, entity="attempt", entity_id=attempt.id, from_state=None,
                    to_state=attempt.state, reason="", at=attempt.created_at)
        return _detach(attempt)

    async def get_attempt(self, attempt_id: str) -> runs.Attempt:
        return _detach(self._attempt(attempt_id))

    async def list_attempts(
        self, run_id: str, *, stage_id: str | None = None
    ) -> builtins.list[runs.Attempt]:
        found = [
            a for a in self.attempts.values()
            if a.run_id == run_id and (stage_id is None or a.stage_id == stage_id)
        ]
        found.sort(key=lambda a: (a.created_at, a.id))
        return [_detach(a) for a in found]

    async def update_attempt(self, attempt_id: str, **fields: Any) -> runs.Attempt:
        what = changes.attempt_what(attempt_id)
        changes.check_fields(what, fields, changes.ATTEMPT_FIELDS)
        updated = dataclasses.replace(self._attempt(attempt_id), **copy.deepcopy(fields))
        self.attempts[attempt_id] = updated
        return _detach(updated)

    async def transition_attempt(
        self, attempt_id: str, to: states.AttemptState, *, reason: str = "", **fields: Any
    ) -> runs.Attempt:
        what = changes.attempt_what(attempt_id)
        changes.check_fields(what, fields, changes.ATTEMPT_FIELDS)
        attempt = self._attempt(attempt_id)
        states.check(attempt.state, to, what=what)
        now = runs.utcnow()
        updated = dataclasses.replace(
            attempt, state=to, **{**base.fields_for_state(to, now), **copy.deepcopy(fields)}
        )
        self.attempts[attempt_id] = updated
        self._event(run_id=attempt.run_id, entity="attempt", entity_id=attempt_id,
                    from_state=attempt.state, to_state=to, reason=reason, at=now)
        return _detach(updated)

    async def apply(self, moves: Sequence[base.Move]) -> builtins.list[runs.StageRun | runs.Attempt]:
        saved = (copy.copy(self.attempts), {k: dict(v) for k, v in self.stages.items()}, list(self.events))
        done: builtins.list[runs.StageRun | runs.Attempt] = []
        try:
            for move in moves:
                if isinstance(move, base.StageMove):
                    done.append(await self.transition_stage(move.run_id, move.stage_id, move.to,
                                                            reason=move.reason, **move.fields))
                elif isinstance(move, base.AttemptMove):
                    done.append(await self.transition_attempt(move.attempt_id, move.to, reason=move.reason,
                                                              **move.fields))
                else:
                    done.append(await self.create_attempt(move.attempt))
        except BaseException:
            self.attempts, self.stages, self.events = saved[0], saved[1], saved[2]
            raise
        return done

    async def list_live_attempts(self) -> builtins.list[runs.Attempt]:
        live = (states.AttemptState.PENDING, states.AttemptState.RUNNING)
        found = [a for a in self.attempts.values() if a.state in live]
        found.sort(key=lambda a: (a.created_at, a.id))
        return [_detach(a) for a in found]

    # events --------------------------------------------------------------------------------
    async def list_events(self, run_id: str, *, after: int = 0) -> builtins.list[runs.Event]:
        self._run(run_id)
        return [e for e in self.events if e.run_id == run_id and e.id > after]

    # secrets -------------------------------------------------------------------------------
    async def put_secret(self, name: str, ciphertext: bytes) -> None:
        now = runs.utcnow()
        old = self.secrets.get(name)
        self.secrets[name] = runs.Secret(
            name=name, ciphertext=bytes(ciphertext),
            created_at=old.created_at if old else now, updated_at=now,
        )

    async def get_secret(self, name: str) -> runs.Secret:
        try:
            return self.secrets[name]
        except KeyError:
            raise changes.secret_not_found([name]) from None

    async def list_secrets(self) -> builtins.list[str]:
        return sorted(self.secrets)

    async def delete_secret(self, name: str) -> None:
        if self.secrets.pop(name, None) is None:
            raise changes.secret_not_found([name])

    # helpers -------------------------------------------------------------------------------
    def _run(self, run_id: str) -> runs.Run:
        try:
            return self.runs[run_id]
        except KeyError:
            raise changes.run_not_found(run_id) from None

    def _stage(self, run_id: str, stage_id: str) -> runs.StageRun:
        self._run(run_id)
        try:
            return self.stages[run_id][stage_id]
        except KeyError:
            raise changes.stage_not_found(run_id, stage_id) from None

    def _attempt(self, attempt_id: str) -> runs.Attempt:
        try:
            return self.attempts[attempt_id]
        except KeyError:
            raise changes.attempt_not_found(attempt_id) from None

    def _event(
        self,
        *,
        run_id: str,
        entity: str,
        entity_id: str,
        from_state: states.State | None,
        to_state: states.State,
        reason: str,
        at: dt.datetime,
    ) -> None:
        self.events.append(runs.Event(
            id=len(self.events) + 1, run_id=run_id, entity=entity, entity_id=entity_id,
            from_state=None if from_state is None else from_state.value,
            to_state=to_state.value, reason=reason, at=at,
        ))

