"""Schedules: list them with their next fire times, enable or disable them.

Enable/disable is stored (``schedule_states``), so it holds across restarts and replicas and
survives a pipeline reload; ``enabled_in_spec`` shows what the pipeline file says.
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Literal

import fastapi
import pydantic

from kubeline import bootstrap
from kubeline.api import access, deps
from kubeline.auth import roles
from kubeline.domain import errors, runs, schedules
from kubeline.scheduler import ticker

Role = roles.Role
router = fastapi.APIRouter(tags=["schedules"])


class ScheduleOut(pydantic.BaseModel):
    pipeline: str
    id: str
    key: str = pydantic.Field(description="'{pipeline}/{id}': the key fires are recorded under.")
    kind: Literal["cron", "interval", "at"]
    cron: str | None = None
    interval: float | None = None
    at: dt.datetime | None = None
    timezone: str
    enabled: bool = pydantic.Field(description="Whether it fires: the pipeline is enabled and so is the schedule.")
    enabled_in_spec: bool
    override: bool | None = pydantic.Field(None, description="Set through the API; null follows the spec.")
    catchup: str
    catchup_limit: int
    webhook_key: str | None = None
    inputs: dict[str, object] = pydantic.Field(default_factory=dict)
    next_fires: list[dt.datetime] = pydantic.Field(description="Upcoming fire times (UTC), soonest first.")
    last_fire: dt.datetime | None = None
    last_run_id: str | None = None

    model_config = pydantic.ConfigDict(json_schema_extra={"examples": [{
        "pipeline": "sales", "id": "nightly", "key": "sales/nightly", "kind": "cron", "cron": "0 2 * * *",
        "timezone": "Europe/Berlin", "enabled": True, "enabled_in_spec": True, "override": None,
        "catchup": "latest", "catchup_limit": 10, "inputs": {"day": "yesterday"},
        "next_fires": ["2024-01-02T01:00:00Z"], "last_fire": "2024-01-01T01:00:00Z",
        "last_run_id": "018cc0a1b2c3d4e5f6a7b8"}]})


async def _kubeline(request: fastapi.Request) -> bootstrap.Kubeline:
    kl: bootstrap.Kubeline = request.app.state.kubeline
    return kl


KL = Annotated[bootstrap.Kubeline, fastapi.Depends(_kubeline)]
Count = Annotated[int, fastapi.Query(ge=0, le=100, description="How many next fire times to list.")]


async def _describe(kl: bootstrap.Kubeline, entry: ticker.Entry, *, count: int) -> ScheduleOut:
    spec = entry.spec
    now = runs.utcnow()
    fires = await kl.store.list_fires(entry.key, limit=1)
    last = fires[0] if fires else None
    kind: Literal["cron", "interval", "at"] = "cron" if spec.cron else "interval" if spec.interval else "at"
    return ScheduleOut(
        pipeline=entry.pipeline.name, id=entry.schedule_id, key=entry.key, kind=kind, cron=spec.cron,
        interval=spec.interval, at=spec.at, timezone=spec.timezone, enabled=entry.enabled,
        enabled_in_spec=spec.enabled, override=entry.state.enabled if entry.state else None,
        catchup=spec.catchup.value, catchup_limit=spec.catchup_limit, webhook_key=spec.webhook_key,
        inputs=dict(spec.inputs),
        next_fires=schedules.next_fires(spec, after=now, count=count) if entry.enabled else [],
        last_fire=last.fire_time if last else None, last_run_id=(last.run_id or None) if last else None,
    )


@router.get("/schedules", response_model=list[ScheduleOut], summary="Every schedule of every pipeline")
async def list_schedules(kl: KL, who: Annotated[roles.Principal, access.requires(Role.viewer, filtered=True)],
                         count: Count = 5) -> list[ScheduleOut]:
    return [await _describe(kl, e, count=count) for e in await ticker.entries(kl.store)
            if access.visible(who, e.pipeline.name, e.pipeline.spec.tags)]


@router.get("/pipelines/{name}/schedules", response_model=list[ScheduleOut], responses=deps.problem_responses(404),
            summary="The schedules of a pipeline",
            dependencies=[access.requires(Role.viewer, pipeline=access.pipeline_path())])
async def pipeline_schedules(name: str, kl: KL, count: Count = 5) -> list[ScheduleOut]:
    return [await _describe(kl, e, count=count) for e in await ticker.entries(kl.store, pipeline=name)]


async def _set(kl: bootstrap.Kubeline, name: str, schedule_id: str, enabled: bool) -> ScheduleOut:
    found = [e for e in await ticker.entries(kl.store, pipeline=name) if e.schedule_id == schedule_id]
    if not found:
        known = [e.schedule_id for e in await ticker.entries(kl.store, pipeline=name)]
        raise errors.NotFoundError(f"pipeline {name!r} has no schedule {schedule_id!r}"
                                   + (f" (its schedules: {', '.join(known)})" if known else " (it has none)"))
    await kl.store.set_schedule_enabled(found[0].key, enabled)
    [entry] = [e for e in await ticker.entries(kl.store, pipeline=name) if e.schedule_id == schedule_id]
    return await _describe(kl, entry, count=5)


@router.post("/pipelines/{name}/schedules/{schedule_id}/enable", response_model=ScheduleOut,
             responses=deps.problem_responses(404),
             summary="Enable a schedule (stored; overrides the spec)",
             dependencies=[access.requires(Role.operator, pipeline=access.pipeline_path())])
async def enable_schedule(name: str, schedule_id: str, kl: KL) -> ScheduleOut:
    return await _set(kl, name, schedule_id, True)


@router.post("/pipelines/{name}/schedules/{schedule_id}/disable", response_model=ScheduleOut,
             responses=deps.problem_responses(404),
             summary="Disable a schedule (stored; overrides the spec)",
             dependencies=[access.requires(Role.operator, pipeline=access.pipeline_path())])
async def disable_schedule(name: str, schedule_id: str, kl: KL) -> ScheduleOut:
    return await _set(kl, name, schedule_id, False)
