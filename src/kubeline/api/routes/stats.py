"""``/api/v1/stats``: the aggregates the dashboard and the pipelines page draw, in one request.

Computed from the runs of the last ``days`` days (UTC), read by ``Store.run_facts`` (only the
columns counted, one index range), so nothing is kept in memory between requests. The read stops
at ``MAX_RUNS`` runs and says so (``truncated``) rather than timing out. Queued and running
counts are over all runs, not the window.
"""

from __future__ import annotations

import collections
import datetime as dt
from typing import Annotated

import fastapi
import pydantic

from kubeline.api import access, deps
from kubeline.auth import roles
from kubeline.domain import states

router = fastapi.APIRouter(tags=["stats"])
MAX_RUNS = 50_000
_RECENT = 10
_FAILED = {states.RunState.FAILED, states.RunState.TIMED_OUT}


class DayOut(pydantic.BaseModel):
    day: dt.date
    succeeded: int = 0
    failed: int = pydantic.Field(0, description="Failed or timed out.")
    cancelled: int = 0
    other: int = pydantic.Field(0, description="Queued or running.")


class SlowOut(pydantic.BaseModel):
    pipeline: str
    runs: int = pydantic.Field(description="Finished runs with a duration in the window.")
    mean_seconds: float
    max_seconds: float


class RecentRunOut(pydantic.BaseModel):
    id: str
    state: states.RunState
    created_at: dt.datetime
    duration: float | None


class StatsOut(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(json_schema_extra={"examples": [{
        "since": "2025-01-01T00:00:00Z", "total": 3, "truncated": False, "failure_rate": 0.33,
        "queued": 0, "running": 1, "days": [{"day": "2025-01-01", "succeeded": 2, "failed": 1,
                                               "cancelled": 0, "other": 0}],
        "heatmap": [[0] * 24 for _ in range(7)], "slowest": [], "recent": {}}]})

    since: dt.datetime
    total: int = pydantic.Field(description="Runs created in the window.")
    truncated: bool = pydantic.Field(
        description=f"The window holds more than {MAX_RUNS} runs; older ones are left out.")
    failure_rate: float | None = pydantic.Field(description="Failed or timed-out share of the finished runs.")
    queued: int
    running: int
    days: list[DayOut] = pydantic.Field(description="One entry per day (UTC), oldest first, empty days included.")
    heatmap: list[list[int]] = pydantic.Field(description="Runs by weekday (0 = Monday) and hour of day (UTC).")
    slowest: list[SlowOut] = pydantic.Field(description="Pipelines by mean run duration, slowest first (5).")
    recent: dict[str, list[RecentRunOut]] = pydantic.Field(
        description=f"The last {_RECENT} runs of each pipeline in the window, newest first.")


@router.get("/stats", dependencies=[access.requires(roles.Role.viewer)], response_model=StatsOut)
async def get_stats(
    kl: deps.KL, days: Annotated[int, fastapi.Query(ge=1, le=90, description="Days back from today (UTC)")] = 14,
) -> StatsOut:
    """Runs per day by outcome, failure rate, a weekday-by-hour heatmap, the queue, the slowest pipelines."""
    today = dt.datetime.now(dt.UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    since = today - dt.timedelta(days=days - 1)
    window = await kl.store.run_facts(since=since, limit=MAX_RUNS + 1)
    truncated = len(window) > MAX_RUNS
    window = window[:MAX_RUNS]
    counts = await kl.store.count_runs()
    per_day = {(since + dt.timedelta(days=i)).date(): DayOut(day=(since + dt.timedelta(days=i)).date())
               for i in range(days)}
    heatmap = [[0] * 24 for _ in range(7)]
    durations: dict[str, list[float]] = collections.defaultdict(list)
    recent: dict[str, list[RecentRunOut]] = collections.defaultdict(list)
    finished = failed = 0
    for run in window:
        created = run.created_at.astimezone(dt.UTC)
        day = per_day.get(created.date())
        heatmap[created.weekday()][created.hour] += 1
        if run.state is states.RunState.SUCCEEDED:
            kind = "succeeded"
        elif run.state in _FAILED:
            kind = "failed"
        elif run.state is states.RunState.CANCELLED:
            kind = "cancelled"
        else:
            kind = "other"
        if day is not None:
            setattr(day, kind, getattr(day, kind) + 1)
        if states.is_final(run.state):
            finished += 1
            failed += kind == "failed"
            if run.duration is not None:
                durations[run.pipeline].append(run.duration)
        if len(recent[run.pipeline]) < _RECENT:
            recent[run.pipeline].append(RecentRunOut(id=run.id, state=run.state, created_at=run.created_at,
                                                     duration=run.duration))
    slowest = sorted((SlowOut(pipeline=name, runs=len(values), mean_seconds=sum(values) / len(values),
                              max_seconds=max(values)) for name, values in durations.items()),
                     key=lambda s: s.mean_seconds, reverse=True)[:5]
    return StatsOut(since=since, total=len(window), truncated=truncated,
                    failure_rate=failed / finished if finished else None,
                    queued=counts.get(states.RunState.QUEUED, 0), running=counts.get(states.RunState.RUNNING, 0),
                    days=list(per_day.values()), heatmap=heatmap, slowest=slowest, recent=dict(recent))
