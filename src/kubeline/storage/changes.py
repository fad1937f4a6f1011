"""What a Store may change on each record, and how it words "not found".

Kept apart from ``storage.sql`` so the allowed ``**fields`` and the messages read in one place;
the contract tests run one suite on SQLite and PostgreSQL.
State itself is never a field: it only moves through ``domain.states.check``.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from kubeline.domain import errors, runs, states

RUN_FIELDS = frozenset(
    {"error", "outputs", "started_at", "finished_at", "cancel_requested", "route"}
)
STAGE_FIELDS = frozenset(
    {"attempts", "retry_at", "outputs", "error", "started_at", "finished_at"}
)
ATTEMPT_FIELDS = frozenset(
    {"handle", "exit_code", "failure", "error", "outputs", "started_at", "finished_at", "executor"}
)


def check_fields(what: str, fields: dict[str, Any], allowed: frozenset[str]) -> None:
    """Refuse fields a caller may not set (a programming error, hence ``TypeError``)."""
    unknown = sorted(set(fields) - allowed)
    if unknown:
        raise TypeError(
            f"{what}: cannot set {', '.join(unknown)}; "
            f"settable fields: {', '.join(sorted(allowed))}"
        )


def run_what(run_id: str) -> str:
    return f"run {run_id}"


def stage_what(run_id: str, stage_id: str) -> str:
    return f"stage {stage_id!r} of run {run_id}"


def attempt_what(attempt_id: str) -> str:
    return f"attempt {attempt_id}"


def pipeline_not_found(name: str) -> errors.NotFoundError:
    return errors.NotFoundError(
        f"pipeline {name!r} not found (`kubeline pipelines list` shows the known pipelines)"
    )


def run_not_found(run_id: str) -> errors.NotFoundError:
    return errors.NotFoundError(
        f"run {run_id!r} not found (`kubeline runs list` shows recent runs)"
    )


def stage_not_found(run_id: str, stage_id: str) -> errors.NotFoundError:
    return errors.NotFoundError(f"stage {stage_id!r} not found in run {run_id!r}")


def attempt_not_found(attempt_id: str) -> errors.NotFoundError:
    return errors.NotFoundError(f"attempt {attempt_id!r} not found")


def secret_not_found(names: Iterable[str]) -> errors.NotFoundError:
    missing = list(names)
    listed = ", ".join(repr(n) for n in missing)
    if len(missing) == 1:
        hint = f"store it with `kubeline secrets set {missing[0]}`"
        return errors.NotFoundError(f"secret {listed} not found ({hint})")
    hint = f"store each with `kubeline secrets set NAME`, e.g. `kubeline secrets set {missing[0]}`"
    return errors.NotFoundError(f"secrets {listed} not found ({hint})")


def run_exists(run_id: str) -> errors.ConflictError:
    return errors.ConflictError(f"run {run_id!r} already exists; make a new id with runs.new_id()")


def attempt_exists(attempt_id: str) -> errors.ConflictError:
    return errors.ConflictError(
        f"attempt {attempt_id!r} (or its stage's attempt number) already exists"
    )


def cancel_final(run_id: str, state: str) -> errors.ConflictError:
    return errors.ConflictError(
        f"run {run_id} is already {state}; only queued or running runs can be cancelled"
    )


def foreign_stage(run_id: str, stage_run_id: str, stage_id: str) -> ValueError:
    return ValueError(f"stage {stage_id!r} belongs to run {stage_run_id}, not {run_id}")


def check_new_run(run: runs.Run, stages: Iterable[runs.StageRun]) -> None:
    """A run handed to the store to insert: queued, with stage rows of its own."""
    if run.state is not states.RunState.QUEUED:
        raise must_be_new(run_what(run.id), run.state.value, "queued")
    for stage in stages:
        if stage.run_id != run.id:
            raise foreign_stage(run.id, stage.run_id, stage.stage_id)


def must_be_new(what: str, state: str, expected: str) -> errors.TransitionError:
    return errors.TransitionError(f"{what}: a new record starts {expected}, not {state}")
