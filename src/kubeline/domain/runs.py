"""Frozen domain records for what the store keeps: pipelines, runs, stage runs, attempts, events."""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
import os
import time
from typing import Any

from kubeline.domain import specs, states


def new_id() -> str:
    """A 22-character id that sorts by creation time (ms) and is safe in K8s names and labels."""
    return f"{time.time_ns() // 1_000_000:012x}{os.urandom(5).hex()}"


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class TriggerKind(enum.StrEnum):
    MANUAL = "manual"
    SCHEDULE = "schedule"
    WEBHOOK = "webhook"
    DOWNSTREAM = "downstream"
    KUBERNETES = "kubernetes"
    API = "api"
    RETRY = "retry"


@dataclasses.dataclass(frozen=True, kw_only=True)
class TriggeredBy:
    kind: TriggerKind = TriggerKind.MANUAL
    detail: str = ""  # schedule id + fire time, webhook key, upstream run id, user ...

    def __str__(self) -> str:
        return f"{self.kind.value}:{self.detail}" if self.detail else self.kind.value


@dataclasses.dataclass(frozen=True, kw_only=True)
class Pipeline:
    name: str
    spec: specs.PipelineSpec
    path: str | None = None  # the folder, for folder pipelines
    source: str = "folder"  # folder | kubernetes | api
    spec_hash: str = ""
    updated_at: dt.datetime = dataclasses.field(default_factory=utcnow)


@dataclasses.dataclass(frozen=True, kw_only=True)
class Run:
    id: str
    pipeline: str
    state: states.RunState = states.RunState.QUEUED
    inputs: dict[str, Any] = dataclasses.field(default_factory=dict)
    triggered_by: TriggeredBy = TriggeredBy()
    spec: specs.PipelineSpec  # the spec as it was when the run was made
    pipeline_path: str | None = None
    created_at: dt.datetime = dataclasses.field(default_factory=utcnow)
    started_at: dt.datetime | None = None
    finished_at: dt.datetime | None = None
    cancel_requested: bool = False
    error: str = ""
    outputs: dict[str, Any] = dataclasses.field(default_factory=dict)
    parent_run_id: str | None = None
    schedule_id: str | None = None  # the run config (schedule) whose overrides apply
    route: str | None = None
    # The fencing token of the run's current lease (store-maintained; bumped by every claim and
    # adoption): the driver's writes carry the one it was given and fail once it moved on.
    lease_generation: int = 0

    @property
    def duration(self) -> float | None:
        if self.started_at is None:
            return None
        return ((self.finished_at or utcnow()) - self.started_at).total_seconds()


@dataclasses.dataclass(frozen=True, kw_only=True)
class StageRun:
    run_id: str
    stage_id: str
    state: states.StageState = states.StageState.WAITING
    attempts: int = 0
    retry_at: dt.datetime | None = None
    outputs: dict[str, Any] = dataclasses.field(default_factory=dict)
    error: str = ""
    started_at: dt.datetime | None = None
    finished_at: dt.datetime | None = None


@dataclasses.dataclass(frozen=True, kw_only=True)
class Attempt:
    id: str
    run_id: str
    stage_id: str
    number: int
    executor: str
    state: states.AttemptState = states.AttemptState.PENDING
    handle: dict[str, Any] = dataclasses.field(default_factory=dict)  # executor data to adopt it
    exit_code: int | None = None
    failure: states.FailureKind | None = None
    error: str = ""
    outputs: dict[str, Any] = dataclasses.field(default_factory=dict)
    created_at: dt.datetime = dataclasses.field(default_factory=utcnow)
    started_at: dt.datetime | None = None
    finished_at: dt.datetime | None = None


@dataclasses.dataclass(frozen=True, kw_only=True)
class Event:
    id: int
    run_id: str
    entity: str  # run | stage | attempt
    entity_id: str
    from_state: str | None
    to_state: str
    reason: str
    at: dt.datetime


@dataclasses.dataclass(frozen=True, kw_only=True)
class Secret:
    name: str
    ciphertext: bytes
    created_at: dt.datetime = dataclasses.field(default_factory=utcnow)
    updated_at: dt.datetime = dataclasses.field(default_factory=utcnow)
