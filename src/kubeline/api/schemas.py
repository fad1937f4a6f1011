"""The API's request and response bodies: pydantic models kept apart from domain records and rows.

The domain may grow fields the API does not promise (executor handles, encrypted env), so every
response is mapped explicitly with a ``from_domain``-style function here; the OpenAPI document
is generated from these models, with examples, so clients and schemathesis see the contract.
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Any, Literal

import pydantic

from kubeline.api import environments
from kubeline.domain import errors, repos, runs, specs, states

RUN_ID_EXAMPLE = "019a3f2c1b7e4d5a6f7e8d"


class Body(pydantic.BaseModel):
    """Request bodies refuse unknown fields: a typo is a 422 naming the field, not ignored."""

    model_config = pydantic.ConfigDict(extra="forbid")


# problems -------------------------------------------------------------------------------------
class FieldError(pydantic.BaseModel):
    location: str
    message: str


class ProblemOut(pydantic.BaseModel):
    """RFC 9457 problem details (``application/problem+json``)."""

    type: str = "about:blank"
    title: str
    status: int
    detail: str = ""
    instance: str = ""
    errors: list[FieldError] = pydantic.Field(default_factory=list, description="Field errors (422).")
    problems: list[SpecProblem] = pydantic.Field(default_factory=list, description="Pipeline problems.")


class SpecProblem(pydantic.BaseModel):
    file: str
    location: str
    message: str
    hint: str = ""

    @classmethod
    def of(cls, problem: errors.Problem) -> SpecProblem:
        return cls(file=problem.file, location=problem.location, message=problem.message, hint=problem.hint)


ProblemOut.model_rebuild()


# pipelines ------------------------------------------------------------------------------------
class InputOut(pydantic.BaseModel):
    type: str
    required: bool
    default: Any = None
    description: str = ""


class PipelineOut(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(json_schema_extra={"examples": [{
        "name": "nightly-sales", "description": "Nightly sales import", "enabled": True,
        "source": "folder", "stages": ["fetch", "clean"], "schedules": 1, "spec_hash": "3f2a9c0d1b2e4f56",
        "inputs": {"day": {"type": "string", "required": False, "default": "today", "description": ""}},
        "updated_at": "2025-01-01T02:00:00Z", "environment": {"state": "ready", "reason": None}}]})

    name: str
    description: str
    enabled: bool
    source: str
    stages: list[str]
    schedules: int
    spec_hash: str
    inputs: dict[str, InputOut]
    updated_at: dt.datetime
    notices: list[SpecProblem] | None = pydantic.Field(
        None, description="Settings read but not acted on (e.g. a Fast-Flow daemon restart policy); "
                          "only on GET of one pipeline, null in lists.")
    environment: environments.EnvironmentSummary | None = pydantic.Field(
        None, description="Its virtualenvs on this server (pre-heated on discovery and git sync); null when this "
                          "server runs no local executor. Packages: GET /pipelines/{name}/environment.")

    @classmethod
    def of(cls, pipeline: runs.Pipeline, *, notices: list[errors.Problem] | None = None,
           environment: environments.EnvironmentSummary | None = None) -> PipelineOut:
        spec = pipeline.spec
        return cls(
            name=pipeline.name, description=spec.description, enabled=spec.enabled, source=pipeline.source,
            stages=[s.id for s in spec.stages], schedules=len(spec.schedules), spec_hash=pipeline.spec_hash,
            inputs={k: InputOut(type=v.type.value, required=v.is_required, default=v.default,
                                description=v.description) for k, v in spec.inputs.items()},
            updated_at=pipeline.updated_at, environment=environment,
            notices=None if notices is None else [SpecProblem.of(n) for n in notices])


class PipelineList(pydantic.BaseModel):
    items: list[PipelineOut]


# A relative path inside the folder, exactly as ``services.validate_spec`` checks it: not absolute,
# no backslash or NUL, no ``..`` segment, and at least one segment other than ``.`` (ECMA regex).
RELATIVE_FILE_PATTERN = (r"^(?!/)(?![\s\S]*[\\\x00])(?!(?:[\s\S]*/)?\.\.(?:/|(?![\s\S])))"
                         r"[\s\S]*(?:^|/)(?:[^/]{2,}|[^/.])")


class ValidateIn(Body):
    """A spec as it would be in ``pipeline.yaml`` (a mapping), or a whole folder as ``files``."""

    model_config = pydantic.ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"spec": {"stages": [{"id": "hello", "type": "shell", "command": "echo hi"}]}},
        {"files": {"main.py": "print('hello')"}}], "oneOf": [
        {"required": ["spec"], "properties": {"spec": {"type": "object"}, "files": {"type": "null"}}},
        {"required": ["files"], "properties": {"files": {"type": "object"}, "spec": {"type": "null"}}}]})

    spec: dict[str, Any] | None = None
    files: dict[str, str] | None = pydantic.Field(
        None, description="File name -> text, e.g. pipeline.yaml and main.py; names may not contain '..'.",
        json_schema_extra={"propertyNames": {"pattern": RELATIVE_FILE_PATTERN}})
    name: str | None = pydantic.Field(None, pattern=specs.NAME_PATTERN)


class ValidateOut(pydantic.BaseModel):
    valid: bool
    name: str | None = None
    stages: list[str] = pydantic.Field(default_factory=list)
    problems: list[SpecProblem] = pydantic.Field(default_factory=list)


class ReloadOut(pydantic.BaseModel):
    loaded: list[str]
    problems: list[SpecProblem]
    notices: list[SpecProblem] = pydantic.Field(
        default_factory=list, description="Settings of loaded pipelines read but not acted on.")


class CellOut(pydantic.BaseModel):
    index: int = pydantic.Field(description="Code-cell index: the entry cells[index] of pipeline.json.")
    state: str = pydantic.Field(description="pending, running, retrying, succeeded, failed, interrupted "
                                            "(the attempt ended during the cell) or skipped.")
    tries: int
    duration: float | None = pydantic.Field(description="Seconds of the last execution that ended.")
    error: str


class AttemptCellsOut(pydantic.BaseModel):
    stage_id: str
    attempt: int
    attempt_state: states.AttemptState
    cells: list[CellOut]


class RunCellsOut(pydantic.BaseModel):
    """Per-cell status of every notebook stage attempt of a run (rebuilt from the attempt logs)."""

    model_config = pydantic.ConfigDict(json_schema_extra={"examples": [{"items": [{
        "stage_id": "main", "attempt": 1, "attempt_state": "failed", "cells": [
            {"index": 0, "state": "succeeded", "tries": 1, "duration": 0.1, "error": ""},
            {"index": 1, "state": "failed", "tries": 3, "duration": 0.0, "error": "ValueError: bad row"},
            {"index": 2, "state": "skipped", "tries": 0, "duration": None, "error": ""}]}]}]})

    items: list[AttemptCellsOut]


class NotebookOut(pydantic.BaseModel):
    """The executed notebook of a notebook stage's attempt: nbformat 4 JSON, outputs included."""

    stage_id: str
    attempt: int
    name: str = pydantic.Field(description="File name in the attempt's artifacts folder.")
    notebook: dict[str, Any] = pydantic.Field(description="The notebook document (nbformat 4).")


# runs -----------------------------------------------------------------------------------------
class RunCreate(Body):
    model_config = pydantic.ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"pipeline": "nightly-sales", "inputs": {"day": "2025-01-01"}}]})

    pipeline: str = pydantic.Field(min_length=1, max_length=128)
    inputs: dict[str, Any] = pydantic.Field(default_factory=dict)
    schedule_id: str | None = pydantic.Field(None, description="Apply this schedule's inputs and overrides.")


class ResourcesOut(pydantic.BaseModel):
    """CPU/memory of an attempt, as its executor measures them (Kubernetes: metrics.k8s.io)."""

    model_config = pydantic.ConfigDict(json_schema_extra={"examples": [
        {"available": True, "reason": "", "cpu_cores": 0.012, "memory_bytes": 48234496,
         "peak_memory_bytes": 52428800},
        {"available": False, "reason": "metrics unavailable: the cluster has no metrics.k8s.io API",
         "cpu_cores": None, "memory_bytes": None, "peak_memory_bytes": None}]})

    available: bool
    reason: str = pydantic.Field("", description="Why there are no numbers (when not available).")
    cpu_cores: float | None = None
    cpu_seconds: float | None = pydantic.Field(None, description="CPU time used (user + system), local executors.")
    memory_bytes: int | None = None
    peak_memory_bytes: int | None = None


class AttemptOut(pydantic.BaseModel):
    id: str
    run_id: str
    stage_id: str
    number: int
    executor: str
    state: states.AttemptState
    exit_code: int | None
    failure: str | None
    error: str
    created_at: dt.datetime
    started_at: dt.datetime | None
    finished_at: dt.datetime | None
    resources: ResourcesOut | None = pydantic.Field(
        None, description="CPU/memory use (only on GET of one attempt; null in lists).")

    @classmethod
    def of(cls, attempt: runs.Attempt, *, resources: dict[str, Any] | None = None) -> AttemptOut:
        return cls(id=attempt.id, run_id=attempt.run_id, stage_id=attempt.stage_id, number=attempt.number,
                   executor=attempt.executor, state=attempt.state, exit_code=attempt.exit_code,
                   failure=attempt.failure.value if attempt.failure else None, error=attempt.error,
                   created_at=attempt.created_at, started_at=attempt.started_at,
                   finished_at=attempt.finished_at,
                   resources=ResourcesOut(**resources) if resources is not None else None)


class AttemptList(pydantic.BaseModel):
    items: list[AttemptOut]


class OutputsOut(pydantic.BaseModel):
    outputs: dict[str, Any]


class StageOut(pydantic.BaseModel):
    stage_id: str
    state: states.StageState
    attempts: int
    error: str
    outputs: dict[str, Any]
    started_at: dt.datetime | None
    finished_at: dt.datetime | None
    retry_at: dt.datetime | None

    @classmethod
    def of(cls, stage: runs.StageRun) -> StageOut:
        return cls(stage_id=stage.stage_id, state=stage.state, attempts=stage.attempts, error=stage.error,
                   outputs=stage.outputs, started_at=stage.started_at, finished_at=stage.finished_at,
                   retry_at=stage.retry_at)


class TriggeredByOut(pydantic.BaseModel):
    kind: str
    detail: str


class RunOut(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(json_schema_extra={"examples": [{
        "id": RUN_ID_EXAMPLE, "pipeline": "nightly-sales", "state": "succeeded",
        "inputs": {"day": "2025-01-01"}, "triggered_by": {"kind": "api", "detail": ""},
        "created_at": "2025-01-01T02:00:00Z", "started_at": "2025-01-01T02:00:01Z",
        "finished_at": "2025-01-01T02:03:00Z", "duration": 179.0, "cancel_requested": False,
        "error": "", "outputs": {"clean": {"rows": 42}}, "parent_run_id": None, "schedule_id": None,
        "route": None, "stages": []}]})

    id: str
    pipeline: str
    state: states.RunState
    inputs: dict[str, Any]
    triggered_by: TriggeredByOut
    created_at: dt.datetime
    started_at: dt.datetime | None
    finished_at: dt.datetime | None
    duration: float | None
    cancel_requested: bool
    error: str
    outputs: dict[str, Any]
    parent_run_id: str | None
    schedule_id: str | None
    route: str | None
    git_commit: str | None = pydantic.Field(
        None, description="The commit the run's pipeline was checked out from (git-synced pipelines).")
    git_source: str | None = pydantic.Field(
        None, description="The git repository (as /api/v1/git names it) the run's pipeline was synced from.")
    stages: list[StageOut] | None = pydantic.Field(None, description="Present on single-run reads.")
    attempts: list[AttemptOut] | None = pydantic.Field(None, description="Present on single-run reads.")
    dag: dict[str, list[str]] | None = pydantic.Field(
        None, description="Present on single-run reads: each stage of the run's spec -> the stages it depends on.")

    @classmethod
    def of(cls, run: runs.Run, *, stages: list[runs.StageRun] | None = None,
           attempts: list[runs.Attempt] | None = None) -> RunOut:
        return cls(
            id=run.id, pipeline=run.pipeline, state=run.state, inputs=run.inputs,
            triggered_by=TriggeredByOut(kind=run.triggered_by.kind.value, detail=run.triggered_by.detail),
            created_at=run.created_at, started_at=run.started_at, finished_at=run.finished_at,
            duration=run.duration, cancel_requested=run.cancel_requested, error=run.error,
            outputs=run.outputs, parent_run_id=run.parent_run_id, schedule_id=run.schedule_id,
            route=run.route, git_commit=repos.commit_of(run.pipeline_path),
            git_source=repos.source_of(run.pipeline_path),
            stages=[StageOut.of(s) for s in stages] if stages is not None else None,
            attempts=[AttemptOut.of(a) for a in attempts] if attempts is not None else None,
            dag={s.id: list(s.depends_on) for s in run.spec.stages} if stages is not None else None)


class RunList(pydantic.BaseModel):
    items: list[RunOut]
    next: str | None = pydantic.Field(None, description="Cursor for the next page (pass as ?cursor=).")


class EventOut(pydantic.BaseModel):
    id: int
    run_id: str
    entity: str
    entity_id: str
    from_state: str | None
    to_state: str
    reason: str
    at: dt.datetime

    @classmethod
    def of(cls, event: runs.Event) -> EventOut:
        return cls(id=event.id, run_id=event.run_id, entity=event.entity, entity_id=event.entity_id,
                   from_state=event.from_state, to_state=event.to_state, reason=event.reason, at=event.at)


class LogLineOut(pydantic.BaseModel):
    at: dt.datetime
    stream: str
    text: str
    stage_id: str
    attempt: int
    cursor: str


class LogStatusOut(pydantic.BaseModel):
    """``available``; ``partial`` (some attempts' logs are gone); ``delayed`` (lines wait on a
    replica's disk until the object store answers again); ``gone`` (every ended attempt's log)."""

    state: Literal["available", "partial", "delayed", "gone"]
    detail: str


# secrets --------------------------------------------------------------------------------------
class SecretIn(Body):
    model_config = pydantic.ConfigDict(extra="forbid", json_schema_extra={"examples": [{"value": "s3cr3t"}]})

    value: str = pydantic.Field(max_length=64 * 1024)


class SecretList(pydantic.BaseModel):
    names: list[str]


# scripts --------------------------------------------------------------------------------------
MAX_SCRIPT_CHARS = 256 * 1024


# One requirements.txt line: what Python's str.strip() removes may surround it; it must not start
# with "-" (a pip option) nor hold a line break or NUL. Explicit classes (no \s), so the documented
# pattern and the server's check are the same rule in Python's and ECMAScript's regex dialects.
_SPACE = r"\t\x0b\x0c \x1c-\x1f\x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000"
REQUIREMENT_PATTERN = rf"^[{_SPACE}]*[^{_SPACE}\r\n\x00\-][^\r\n\x00]*$"


class ScriptIn(Body):
    """An ad-hoc Python script: it reads ``input`` with ``kubeline.task.inputs()`` (or
    ``$KUBELINE_INPUTS``) and writes outputs with ``task.set_output``."""

    model_config = pydantic.ConfigDict(extra="forbid", json_schema_extra={"examples": [{
        "code": "from kubeline import task\nprint('hi')\ntask.set_output('n', task.input('n') + 1)",
        "input": {"n": 41}, "timeout": 60}]})

    code: str = pydantic.Field(min_length=1, max_length=MAX_SCRIPT_CHARS)
    input: dict[str, Any] = pydantic.Field(default_factory=dict)
    requirements: list[str] = pydantic.Field(default_factory=list, max_length=50, json_schema_extra={"items": {
        "type": "string", "pattern": REQUIREMENT_PATTERN}})
    timeout: float | None = pydantic.Field(None, gt=0, le=24 * 3600)

    @pydantic.field_validator("requirements")
    @classmethod
    def _one_requirement_per_item(cls, value: list[str]) -> list[str]:
        """Each item becomes one line of requirements.txt: a line break or a pip option (``-r
        /etc/passwd``, ``--index-url ...``) would smuggle in what a package name cannot."""
        for item in value:
            if not re.fullmatch(REQUIREMENT_PATTERN, item):
                raise ValueError(f"{item[:80]!r} is not a package requirement: give one requirement per item "
                                 "(e.g. 'requests==2.32.3'), no pip options and no line breaks")
        return value


class ScriptOut(pydantic.BaseModel):
    run: RunOut
    outputs: dict[str, Any] | None = pydantic.Field(None, description="With ?wait=true: the script's outputs.")
    logs: str | None = pydantic.Field(None, description="With ?wait=true: the log text.")
    success: bool | None = None


# health ---------------------------------------------------------------------------------------
class HealthOut(pydantic.BaseModel):
    status: str
    checks: dict[str, str] = pydantic.Field(default_factory=dict)
