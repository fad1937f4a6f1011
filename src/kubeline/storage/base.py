"""The Store port: everything the engine, API and CLI persist goes through this protocol.

Every method that changes a state checks the move with ``domain.states.check`` against the
*stored* current state inside the same transaction, and writes one ``events`` row with it.
Implementations: ``storage.sql.SqlStore`` (SQLite, PostgreSQL) and ``storage.memory.MemoryStore``.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Sequence
from typing import Any, Protocol

from kubeline.domain import runs, states


@dataclasses.dataclass(frozen=True, kw_only=True)
class StageMove:
    run_id: str
    stage_id: str
    to: states.StageState
    reason: str = ""
    fields: dict[str, Any] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True, kw_only=True)
class AttemptMove:
    attempt_id: str
    to: states.AttemptState
    reason: str = ""
    fields: dict[str, Any] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True, kw_only=True)
class NewAttempt:
    attempt: runs.Attempt


Move = StageMove | AttemptMove | NewAttempt


class Store(Protocol):
    async def close(self) -> None: ...

    # pipelines -----------------------------------------------------------------------------
    async def upsert_pipeline(self, pipeline: runs.Pipeline) -> None: ...
    async def get_pipeline(self, name: str) -> runs.Pipeline:
        """Raise ``errors.NotFoundError`` naming the pipeline when it does not exist."""
        ...
    async def list_pipelines(self) -> list[runs.Pipeline]: ...
    async def delete_pipeline(self, name: str) -> None: ...

    # runs ----------------------------------------------------------------------------------
    async def create_run(self, run: runs.Run, stages: list[runs.StageRun]) -> runs.Run:
        """Insert the run (queued) and its stage rows, plus a 'queued' event, in one transaction."""
        ...
    async def get_run(self, run_id: str) -> runs.Run: ...
    async def list_runs(
        self,
        *,
        pipeline: str | None = None,
        states_in: list[states.RunState] | None = None,
        limit: int = 50,
        before: str | None = None,
    ) -> list[runs.Run]:
        """Newest first; ``before`` is a run id cursor (runs created before it)."""
        ...
    async def transition_run(
        self, run_id: str, to: states.RunState, *, reason: str = "", **fields: Any
    ) -> runs.Run:
        """Move a run (rules checked against the stored state) and set ``fields``; one event row.

        ``started_at``/``finished_at`` are set automatically on entering running / a final state.
        """
        ...
    async def request_cancel(self, run_id: str) -> runs.Run:
        """Flag a run for cancellation (its driver acts on it); error if the run is final."""
        ...
    async def claim_queued_runs(self, *, limit: int, only: list[str] | None = None) -> list[runs.Run]:
        """Move up to ``limit`` queued runs to running, oldest first, honouring each pipeline's
        ``max_instances`` against its running runs; safe with several processes. ``only``
        restricts the claim to these run ids (``kubeline run`` drives just its own run)."""
        ...

    # stages --------------------------------------------------------------------------------
    async def list_stage_runs(self, run_id: str) -> list[runs.StageRun]: ...
    async def transition_stage(
        self, run_id: str, stage_id: str, to: states.StageState, *, reason: str = "", **fields: Any
    ) -> runs.StageRun: ...

    # attempts ------------------------------------------------------------------------------
    async def create_attempt(self, attempt: runs.Attempt) -> runs.Attempt:
        """Insert a pending attempt and bump the stage's attempt counter; one event row."""
        ...
    async def get_attempt(self, attempt_id: str) -> runs.Attempt: ...
    async def list_attempts(self, run_id: str, *, stage_id: str | None = None) -> list[runs.Attempt]: ...
    async def update_attempt(self, attempt_id: str, **fields: Any) -> runs.Attempt:
        """Set non-state fields (e.g. ``handle``); never the state."""
        ...
    async def transition_attempt(
        self, attempt_id: str, to: states.AttemptState, *, reason: str = "", **fields: Any
    ) -> runs.Attempt: ...
    async def apply(self, moves: Sequence[Move]) -> list[runs.StageRun | runs.Attempt]:
        """Several stage/attempt changes in ONE transaction (all or none), same rules and events
        as the single-change methods; returns the updated records in order. The engine uses it to
        keep the store's cost per stage low."""
        ...
    async def list_live_attempts(self) -> list[runs.Attempt]:
        """Attempts pending or running, for reconciliation after a restart."""
        ...

    # events --------------------------------------------------------------------------------
    async def list_events(self, run_id: str, *, after: int = 0) -> list[runs.Event]: ...

    # secrets -------------------------------------------------------------------------------
    async def put_secret(self, name: str, ciphertext: bytes) -> None: ...
    async def get_secret(self, name: str) -> runs.Secret: ...
    async def list_secrets(self) -> list[str]: ...
    async def delete_secret(self, name: str) -> None: ...


def fields_for_state(to: states.State, now: dt.datetime) -> dict[str, Any]:
    """Timestamps implied by entering a state (shared by every Store implementation)."""
    if to in (states.RunState.RUNNING, states.StageState.RUNNING, states.AttemptState.RUNNING):
        return {"started_at": now}
    if states.is_final(to):
        return {"finished_at": now}
    return {}
