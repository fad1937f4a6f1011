"""Explicit row <-> domain mapping: ``*_to_row`` gives column values, ``*_from_row`` a record.

Kept apart from the queries so the mapping can be read (and tested) in one place. The run's spec
is stored as JSON and validated again with ``specs.PipelineSpec.model_validate`` on the way out,
so a stored run never carries an invalid spec into the engine.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping
from typing import Any

from kubeline.domain import runs, specs, states

Row = Mapping[Any, Any]  # a dict or an SQLAlchemy RowMapping


def spec_to_json(spec: specs.PipelineSpec) -> dict[str, Any]:
    return spec.model_dump(mode="json")


def spec_from_json(data: Any) -> specs.PipelineSpec:
    """The spec, validated; the runs of one pipeline share a spec (it is frozen), validated once
    per process for the text it is stored as: validation costs about a millisecond a run read,
    serialising the JSON back to a key a few microseconds. Run rows come with the spec's text
    (``tables.RUN_ROW``): then neither a decode nor a serialisation."""
    if isinstance(data, str):
        return _spec_of(data)
    if isinstance(data, dict):
        return _spec_of(json.dumps(data, separators=(",", ":")))
    return specs.PipelineSpec.model_validate(data)


@functools.lru_cache(maxsize=512)
def _spec_of(text: str) -> specs.PipelineSpec:
    return specs.PipelineSpec.model_validate(json.loads(text))


def pipeline_to_row(pipeline: runs.Pipeline) -> dict[str, Any]:
    return {
        "name": pipeline.name,
        "spec": spec_to_json(pipeline.spec),
        "path": pipeline.path,
        "source": pipeline.source,
        "spec_hash": pipeline.spec_hash,
        "updated_at": pipeline.updated_at,
    }


def pipeline_from_row(row: Row) -> runs.Pipeline:
    return runs.Pipeline(
        name=row["name"],
        spec=spec_from_json(row["spec"]),
        path=row["path"],
        source=row["source"],
        spec_hash=row["spec_hash"],
        updated_at=row["updated_at"],
    )


def run_to_row(run: runs.Run) -> dict[str, Any]:
    return {
        "id": run.id,
        "pipeline": run.pipeline,
        "state": run.state.value,
        "inputs": run.inputs,
        "triggered_by_kind": run.triggered_by.kind.value,
        "triggered_by_detail": run.triggered_by.detail,
        "spec": spec_to_json(run.spec),
        "max_instances": run.spec.max_instances,
        "pipeline_path": run.pipeline_path,
        "created_at": run.created_at,
        "started_at": run.started_at,
        "finished_at": run.finished_at,
        "cancel_requested": run.cancel_requested,
        "error": run.error,
        "outputs": run.outputs,
        "parent_run_id": run.parent_run_id,
        "schedule_id": run.schedule_id,
        "route": run.route,
        # store-internal, not part of the domain record: the claim sets the owner and completes
        # the executor with the server's default
        "owner": None,
        "lease_expires_at": None,
        "executor": run.spec.executor,
        "lease_generation": 0,
    }


def run_from_row(row: Row) -> runs.Run:
    return runs.Run(
        id=row["id"],
        pipeline=row["pipeline"],
        state=states.RunState(row["state"]),
        inputs=row["inputs"],
        triggered_by=runs.TriggeredBy(
            kind=runs.TriggerKind(row["triggered_by_kind"]), detail=row["triggered_by_detail"]
        ),
        spec=spec_from_json(row["spec"]),
        pipeline_path=row["pipeline_path"],
        created_at=row["created_at"],
        started_at=row["started_at"],
        finished_at=row["finished_at"],
        cancel_requested=bool(row["cancel_requested"]),
        error=row["error"],
        outputs=row["outputs"],
        parent_run_id=row["parent_run_id"],
        schedule_id=row["schedule_id"],
        route=row["route"],
        lease_generation=row.get("lease_generation") or 0,
    )


def stage_to_row(stage: runs.StageRun, *, position: int) -> dict[str, Any]:
    return {
        "run_id": stage.run_id,
        "stage_id": stage.stage_id,
        "position": position,
        "state": stage.state.value,
        "attempts": stage.attempts,
        "retry_at": stage.retry_at,
        "outputs": stage.outputs,
        "error": stage.error,
        "started_at": stage.started_at,
        "finished_at": stage.finished_at,
    }


def stage_from_row(row: Row) -> runs.StageRun:
    return runs.StageRun(
        run_id=row["run_id"],
        stage_id=row["stage_id"],
        state=states.StageState(row["state"]),
        attempts=row["attempts"],
        retry_at=row["retry_at"],
        outputs=row["outputs"],
        error=row["error"],
        started_at=row["started_at"],
        finished_at=row["finished_at"],
    )


def attempt_to_row(attempt: runs.Attempt) -> dict[str, Any]:
    return {
        "id": attempt.id,
        "run_id": attempt.run_id,
        "stage_id": attempt.stage_id,
        "number": attempt.number,
        "executor": attempt.executor,
        "state": attempt.state.value,
        "handle": attempt.handle,
        "exit_code": attempt.exit_code,
        "failure": None if attempt.failure is None else attempt.failure.value,
        "error": attempt.error,
        "outputs": attempt.outputs,
        "created_at": attempt.created_at,
        "started_at": attempt.started_at,
        "finished_at": attempt.finished_at,
    }


def attempt_from_row(row: Row) -> runs.Attempt:
    failure = row["failure"]
    return runs.Attempt(
        id=row["id"],
        run_id=row["run_id"],
        stage_id=row["stage_id"],
        number=row["number"],
        executor=row["executor"],
        state=states.AttemptState(row["state"]),
        handle=row["handle"],
        exit_code=row["exit_code"],
        failure=None if failure is None else states.FailureKind(failure),
        error=row["error"],
        outputs=row["outputs"],
        created_at=row["created_at"],
        started_at=row["started_at"],
        finished_at=row["finished_at"],
    )


def event_from_row(row: Row) -> runs.Event:
    return runs.Event(
        id=row["id"],
        run_id=row["run_id"],
        entity=row["entity"],
        entity_id=row["entity_id"],
        from_state=row["from_state"],
        to_state=row["to_state"],
        reason=row["reason"],
        at=row["at"],
    )


def secret_from_row(row: Row) -> runs.Secret:
    return runs.Secret(
        name=row["name"],
        ciphertext=bytes(row["ciphertext"]),
        created_at=row["created_at"],
        updated_at=row["updated_at"],
    )


def field_values(fields: Mapping[str, Any]) -> dict[str, Any]:
    """Domain field values (``**fields`` of a transition) as column values; names are shared."""
    return {k: (v.value if isinstance(v, states.FailureKind) else v) for k, v in fields.items()}
