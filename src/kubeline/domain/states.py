"""Run, stage and attempt states, and the only rules that may change them.

Every state change in Kubeline goes through ``check`` (directly or via the store's
``transition`` helpers), which refuses any move the tables below do not list. The store applies an
allowed move and its event row in one transaction, so the events table is a complete history.

Run:      queued -> running -> succeeded | failed | cancelled | timed_out
Stage:    waiting -> pending -> running -> succeeded | failed | timed_out | cancelled
                                   \\-> retrying -> pending   (a new attempt after the delay)
          waiting | pending -> skipped (an upstream stage did not succeed) | cancelled
Attempt:  pending -> running -> succeeded | failed | cancelled | timed_out
"""

from __future__ import annotations

import enum

from kubeline.domain import errors


class RunState(enum.StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    TIMED_OUT = "timed_out"


class StageState(enum.StrEnum):
    WAITING = "waiting"
    PENDING = "pending"
    RUNNING = "running"
    RETRYING = "retrying"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    TIMED_OUT = "timed_out"
    SKIPPED = "skipped"


class AttemptState(enum.StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    TIMED_OUT = "timed_out"


class FailureKind(enum.StrEnum):
    """Why an attempt did not succeed; decides whether a retry applies."""

    EXIT_CODE = "failed"
    TIMEOUT = "timed_out"
    OOM = "oom"
    CANCELLED = "cancelled"
    START_FAILED = "start_failed"
    LOST = "lost"


State = RunState | StageState | AttemptState

_RUN: dict[RunState, set[RunState]] = {
    RunState.QUEUED: {RunState.RUNNING, RunState.CANCELLED, RunState.FAILED},
    RunState.RUNNING: {RunState.SUCCEEDED, RunState.FAILED, RunState.CANCELLED, RunState.TIMED_OUT},
}
_STAGE: dict[StageState, set[StageState]] = {
    StageState.WAITING: {StageState.PENDING, StageState.SKIPPED, StageState.CANCELLED},
    StageState.PENDING: {StageState.RUNNING, StageState.FAILED, StageState.CANCELLED, StageState.SKIPPED},
    StageState.RUNNING: {StageState.SUCCEEDED, StageState.FAILED, StageState.TIMED_OUT,
                         StageState.CANCELLED, StageState.RETRYING},
    StageState.RETRYING: {StageState.PENDING, StageState.CANCELLED},
}
_ATTEMPT: dict[AttemptState, set[AttemptState]] = {
    AttemptState.PENDING: {AttemptState.RUNNING, AttemptState.FAILED, AttemptState.CANCELLED,
                           AttemptState.TIMED_OUT},
    AttemptState.RUNNING: {AttemptState.SUCCEEDED, AttemptState.FAILED, AttemptState.CANCELLED,
                           AttemptState.TIMED_OUT},
}

FINAL_RUN = frozenset({RunState.SUCCEEDED, RunState.FAILED, RunState.CANCELLED, RunState.TIMED_OUT})
FINAL_STAGE = frozenset({StageState.SUCCEEDED, StageState.FAILED, StageState.CANCELLED,
                         StageState.TIMED_OUT, StageState.SKIPPED})
FINAL_ATTEMPT = frozenset({AttemptState.SUCCEEDED, AttemptState.FAILED, AttemptState.CANCELLED,
                           AttemptState.TIMED_OUT})


def allowed(current: State, target: State) -> bool:
    table: dict[State, set[State]]
    if isinstance(current, RunState):
        table = _RUN  # type: ignore[assignment]
    elif isinstance(current, StageState):
        table = _STAGE  # type: ignore[assignment]
    else:
        table = _ATTEMPT  # type: ignore[assignment]
    return type(current) is type(target) and target in table.get(current, set())


def check(current: State, target: State, *, what: str) -> None:
    """Raise ``TransitionError`` unless ``current -> target`` is an allowed move for ``what``."""
    if not allowed(current, target):
        raise errors.TransitionError(f"{what}: cannot go from {current.value} to {target.value}")


def is_final(state: State) -> bool:
    return state in FINAL_RUN or state in FINAL_STAGE or state in FINAL_ATTEMPT


def stage_state_for(kind: FailureKind) -> StageState:
    """The final stage state for an attempt that ended with this failure and is not retried."""
    return {FailureKind.TIMEOUT: StageState.TIMED_OUT,
            FailureKind.CANCELLED: StageState.CANCELLED}.get(kind, StageState.FAILED)


def attempt_state_for(kind: FailureKind) -> AttemptState:
    return {FailureKind.TIMEOUT: AttemptState.TIMED_OUT,
            FailureKind.CANCELLED: AttemptState.CANCELLED}.get(kind, AttemptState.FAILED)


def run_state_for(stage_states: list[StageState]) -> RunState:
    """The final state of a run whose stages are all final."""
    if all(s is StageState.SUCCEEDED for s in stage_states):
        return RunState.SUCCEEDED
    if any(s is StageState.CANCELLED for s in stage_states):
        return RunState.CANCELLED
    if any(s is StageState.TIMED_OUT for s in stage_states):
        return RunState.TIMED_OUT
    return RunState.FAILED
