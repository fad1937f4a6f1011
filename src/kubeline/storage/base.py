"""The Store port: everything the engine, API and CLI persist goes through this protocol.

Every method that changes a state checks the move with ``domain.states.check`` against the
*stored* current state inside the same transaction, and writes one ``events`` row with it.
One implementation: ``storage.sql.SqlStore`` (SQLite, PostgreSQL; tests use a temporary SQLite file).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from kubeline.domain import runs, states
from kubeline.storage import wakeups as wakeups_


@dataclasses.dataclass(frozen=True, kw_only=True)
class ExecutorDemand:
    """Counts of the work waiting for, or held by, one executor (``Store.executor_demand``): what a
    worker pool's scaler attributes to pools (``domain.pool_scaling``). Only counts and the specs of
    the pipelines they name are read, never the runs' rows."""

    queued_runs: dict[str, int]  # pipeline -> runs queued (any executor: a stage may name another)
    held: dict[str, int]  # handle["pool"] -> attempts handed to the executor, not final
    unsent: dict[tuple[str, str], int]  # (pipeline, stage) -> attempts recorded, not yet handed over
    pipelines: dict[str, runs.Pipeline]  # the pipelines named above (their specs say which pool)


@dataclasses.dataclass(frozen=True, kw_only=True)
class RunFacts:
    """The few columns of a run the dashboard shows (``RunStats.recent``)."""

    id: str
    pipeline: str
    state: states.RunState
    created_at: dt.datetime
    started_at: dt.datetime | None
    finished_at: dt.datetime | None

    @property
    def duration(self) -> float | None:
        if self.started_at is None or self.finished_at is None:
            return None
        return (self.finished_at - self.started_at).total_seconds()


@dataclasses.dataclass(frozen=True, kw_only=True)
class HourCount:
    """How many runs created in this UTC hour are in ``state`` now."""

    hour: dt.datetime
    state: states.RunState
    count: int


@dataclasses.dataclass(frozen=True, kw_only=True)
class PipelineDurations:
    """Finished runs of a pipeline that have a duration: how many, their mean and longest."""

    pipeline: str
    runs: int
    mean_seconds: float
    max_seconds: float


@dataclasses.dataclass(frozen=True, kw_only=True)
class RunStats:
    """The dashboard's aggregates as the database counted them (``Store.run_stats``)."""

    hours: list[HourCount]
    """Runs created in the window, by UTC hour and state (hours without runs left out)."""
    slowest: list[PipelineDurations]
    """Pipelines by mean duration of their finished runs in the window, slowest first."""
    recent: list[RunFacts]
    """The last runs of each pipeline in the window, by pipeline, newest first."""
    by_state: dict[states.RunState, int]
    """All runs (not only the window's) per state."""


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



@dataclasses.dataclass(frozen=True, kw_only=True)
class NewRun:
    """A run to insert (queued, with its stage rows) in the same transaction as the change that
    causes it: a downstream run with its parent's end, a webhook's run with its delivery, a
    schedule's run with its fire. A crash can then lose neither or both."""

    run: runs.Run
    stages: list[runs.StageRun]


@dataclasses.dataclass(frozen=True, kw_only=True)
class RunMove:
    """The run's own move (``transition_run``), in the transaction of the stage move that ends it."""

    run_id: str
    to: states.RunState
    reason: str = ""
    fields: dict[str, Any] = dataclasses.field(default_factory=dict)
    spawn: list[NewRun] = dataclasses.field(default_factory=list)


Move = StageMove | AttemptMove | NewAttempt | RunMove


@dataclasses.dataclass(frozen=True, kw_only=True)
class Claimed:
    """A run just moved from the queue to running, with its stage rows (read in the claim's
    transaction: its driver needs them, and needs no transaction of its own to read them), and
    the records of the moves the claim's ``start`` gave it (its first attempts, written in the
    claim's transaction; ``None``: no such moves, or they failed and the driver makes them)."""

    run: runs.Run
    stages: list[runs.StageRun]
    started: list[runs.StageRun | runs.Attempt | runs.Run] | None = None


# The moves that start a run just claimed (its first attempts), given the run and its stage rows
# as the claim read them: made by the engine, written by the store in the claim's transaction.
StartMoves = Callable[[runs.Run, list[runs.StageRun]], list[Move]]


@dataclasses.dataclass(frozen=True, kw_only=True)
class Lease:
    """Ownership of running runs: ``owner`` drives them until ``until`` unless it renews."""

    owner: str
    until: dt.datetime


@dataclasses.dataclass(frozen=True, kw_only=True)
class Fence:
    """A driver's hold on one run: the lease generation its claim or adoption got. A write that
    carries it succeeds only while the run is still at that generation (one conditional UPDATE in
    the write's transaction), else it raises ``errors.LeaseLostError`` and changes nothing: a
    replica that stalled past its lease cannot overwrite what the replica that adopted the run
    wrote since."""

    run_id: str
    generation: int


@dataclasses.dataclass(frozen=True, kw_only=True)
class ClaimCaps:
    """Concurrency caps enforced in the claim, across every process: running runs in all
    (``max_running``) and per executor (a run's executor is its spec's or ``default_executor``)."""

    max_running: int | None = None
    per_executor: dict[str, int] = dataclasses.field(default_factory=dict)
    default_executor: str = "local"


@dataclasses.dataclass(frozen=True, kw_only=True)
class ScheduleState:
    schedule_key: str  # "{pipeline}/{schedule_id}"
    enabled: bool | None  # None: as the spec says; True/False: set through the API
    since: dt.datetime  # when the scheduler first saw it: no fire before this is made
    updated_at: dt.datetime


@dataclasses.dataclass(frozen=True, kw_only=True)
class ScheduleFire:
    schedule_key: str
    fire_time: dt.datetime
    run_id: str | None
    created_at: dt.datetime


@dataclasses.dataclass(frozen=True, kw_only=True)
class HookVerdict:
    """What ``accept_delivery`` decided: accepted, a replay, or rate limited (retry after)."""

    accepted: bool
    replayed: bool = False
    retry_after: float = 0.0


class Store(Protocol):
    wakeups: wakeups_.Wakeups  # published by the store's own writes; subscribe to wait for them

    async def close(self) -> None: ...

    # pipelines -----------------------------------------------------------------------------
    async def upsert_pipeline(self, pipeline: runs.Pipeline) -> None: ...
    async def get_pipeline(self, name: str) -> runs.Pipeline:
        """Raise ``errors.NotFoundError`` naming the pipeline when it does not exist."""
        ...
    async def list_pipelines(self) -> list[runs.Pipeline]: ...
    async def delete_pipeline(self, name: str) -> None: ...

    # runs ----------------------------------------------------------------------------------
    async def create_run(self, run: runs.Run, stages: list[runs.StageRun], *,
                         audit: dict[str, Any] | None = None) -> runs.Run:
        """Insert the run (queued) and its stage rows, plus a 'queued' event, in one transaction;
        with ``audit``, also the audit row (``accounts.audit_row``) of the request that makes it
        (a run is never created without its audit row, nor the reverse)."""
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
    async def run_stats(self, *, since: dt.datetime, recent: int, slowest: int) -> RunStats:
        """Aggregates of the runs created at or after ``since``, counted by the database: a few
        hundred rows however many runs there are; ``recent`` runs per pipeline (0: none, and
        none read), the ``slowest`` pipelines."""
        ...
    async def transition_run(
        self, run_id: str, to: states.RunState, *, reason: str = "", spawn: Sequence[NewRun] = (),
        fence: Fence | None = None, **fields: Any
    ) -> runs.Run:
        """Move a run (rules checked against the stored state) and set ``fields``; one event row.
        ``spawn``: runs it causes (downstream), inserted in the same transaction.

        ``started_at``/``finished_at`` are set automatically on entering running / a final state
        (a ``finished_at`` in ``fields`` wins: an adopted run ends when its last stage did).
        ``fence``: the write is made on behalf of a leased run (see ``Fence``), as in every
        method below that takes one.
        """
        ...
    async def count_runs(self, *, states_in: Sequence[states.RunState] | None = None) -> dict[states.RunState, int]:
        """How many runs are in each state (one ``GROUP BY``; for gauges); ``states_in``: only those
        states, read from the index on ``state`` (a gauge of the queue reads no finished run)."""
        ...
    async def executor_demand(self, *, executor: str) -> ExecutorDemand:
        """Queued runs per pipeline, and ``executor``'s live attempts per pool / per stage (``GROUP BY``)."""
        ...
    async def request_cancel(self, run_id: str) -> runs.Run:
        """Flag a run for cancellation (its driver acts on it); error if the run is final."""
        ...
    async def claim_queued_runs(
        self, *, limit: int, only: list[str] | None = None, lease: Lease | None = None,
        caps: ClaimCaps | None = None,
    ) -> list[runs.Run]:
        """Move up to ``limit`` queued runs to running, oldest first, honouring each pipeline's
        ``max_instances`` and the ``caps`` against running runs; safe with several processes.
        ``only`` restricts the claim to these run ids (``kubeline run`` drives just its own run);
        ``lease`` makes its owner the run's driver until the lease expires."""
        ...
    async def claim_runs(
        self, *, limit: int, only: list[str] | None = None, lease: Lease | None = None,
        caps: ClaimCaps | None = None, start: StartMoves | None = None,
    ) -> list[Claimed]:
        """``claim_queued_runs``, each run with its stage rows (in position order); ``start``: the
        moves that start each claimed run, applied in the claim's transaction as ``apply`` does
        (with the run's new lease generation as their fence), their records in ``started``."""
        ...
    async def renew_leases(self, lease: Lease, fences: Sequence[Fence]) -> list[str]:
        """Return the ids of the runs of ``fences`` still owned by ``lease.owner`` at their fence's
        generation, whatever their state, and extend ``lease`` on the running ones (a run missing
        from the answer was adopted by another process: stop driving it)."""
        ...
    async def release_leases(self, fences: Sequence[Fence]) -> None:
        """Give up ownership (a clean shutdown) of the runs still at their fence's generation, so
        the next process adopts them at once."""
        ...
    async def adopt_runs(
        self, lease: Lease, *, limit: int, only: list[str] | None = None,
        reclaim_before: dt.datetime | None = None, exclude: Sequence[str] = (),
    ) -> list[runs.Run]:
        """Take over running runs without an owner or whose lease has expired (its process died),
        bumping their lease generation (the old driver's writes then fail); safe with several
        processes: each run is adopted by one. ``reclaim_before``: also take the runs leased to
        ``lease.owner`` whose lease ends before that time, i.e. leased by an earlier life of this
        replica (a restart with the same identity), at once instead of after their lease.
        ``exclude``: runs the caller drives already (a late renewal must not make a process
        adopt, and so fence off, its own live driver)."""
        ...

    # stages --------------------------------------------------------------------------------
    async def list_stage_runs(self, run_id: str) -> list[runs.StageRun]: ...
    async def transition_stage(
        self, run_id: str, stage_id: str, to: states.StageState, *, reason: str = "",
        fence: Fence | None = None, **fields: Any
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
        self, attempt_id: str, to: states.AttemptState, *, reason: str = "", fence: Fence | None = None,
        **fields: Any
    ) -> runs.Attempt: ...
    async def apply(
        self, moves: Sequence[Move], *, fence: Fence | None = None
    ) -> list[runs.StageRun | runs.Attempt | runs.Run]:
        """Several stage/attempt/run changes in ONE transaction (all or none), same rules and
        events as the single-change methods; returns the updated records in order. The engine uses
        it to keep the store's cost per stage low (the last stage's end ends its run too)."""
        ...
    async def list_live_attempts(self) -> list[runs.Attempt]:
        """Attempts pending or running, for reconciliation after a restart."""
        ...

    # schedules -----------------------------------------------------------------------------
    async def ensure_schedule_state(self, schedule_key: str, *, since: dt.datetime) -> ScheduleState:
        """The stored state, inserted with ``since`` when missing (the first replica wins)."""
        ...
    async def list_schedule_states(self) -> list[ScheduleState]: ...
    async def set_schedule_enabled(self, schedule_key: str, enabled: bool | None) -> ScheduleState: ...
    async def claim_fire(self, schedule_key: str, fire_time: dt.datetime, *, stale_after: float = 60.0,
                         run: NewRun | None = None) -> bool:
        """Record a fire; True for the one caller that won it. With ``run``, the winner's run is
        inserted and linked to the fire in the same transaction. A fire recorded more than
        ``stale_after`` seconds ago without a run (its claimer died) can be claimed again."""
        ...
    async def set_fire_run(self, schedule_key: str, fire_time: dt.datetime, run_id: str) -> None: ...
    async def last_fire_times(self) -> dict[str, dt.datetime]:
        """The latest recorded fire time per schedule key."""
        ...
    async def list_fires(self, schedule_key: str, *, limit: int = 50) -> list[ScheduleFire]:
        """Newest first."""
        ...
    async def latest_fire(self) -> ScheduleFire | None:
        """The newest fire of any schedule (by fire time), or None before the first."""
        ...

    # webhooks ------------------------------------------------------------------------------
    async def accept_delivery(
        self, hook_key: str, delivery_id: str, *, now: dt.datetime, rate_limit: int, keep: float,
        run: NewRun | None = None,
    ) -> HookVerdict:
        """Record a webhook delivery unless ``delivery_id`` was seen (replay) or ``rate_limit``
        deliveries were accepted in the last minute; forget deliveries older than ``keep`` s.
        With ``run``, an accepted delivery's run is inserted in the same transaction."""
        ...

    # events --------------------------------------------------------------------------------
    async def list_events(self, run_id: str, *, after: int = 0) -> list[runs.Event]: ...

    # secrets -------------------------------------------------------------------------------
    async def put_secret(self, name: str, ciphertext: bytes) -> None: ...
    async def get_secret(self, name: str) -> runs.Secret: ...
    async def list_secrets(self) -> list[str]: ...
    async def delete_secret(self, name: str) -> None: ...


def fields_for_state(to: states.State, now: dt.datetime) -> dict[str, Any]:
    """Timestamps implied by entering a state (shared by every Store implementation); the
    caller's own ``started_at``/``finished_at`` override them."""
    if to in (states.RunState.RUNNING, states.StageState.RUNNING, states.AttemptState.RUNNING):
        return {"started_at": now}
    if states.is_final(to):
        return {"finished_at": now}
    return {}
