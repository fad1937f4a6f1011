"""``/api/v1/stats``: the aggregates the dashboard and the pipelines page draw, in one request.

Over the runs of the last ``days`` days (UTC). The database counts (``Store.run_stats``: runs by
hour and state, durations per pipeline, the last runs of each), so the answer costs the same at
ten runs or a million and nothing is kept in memory between requests; here the hourly groups
are only folded into days, the weekday-by-hour heatmap and the failure rate. Queued and running
counts are over all runs, not the window. The dashboard asks for no last runs (``recent=0``): it
draws none, and at 20 pipelines they were most of the answer (~23 of ~26 kB, inlined in its page)
and one of its three reads over the window.
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated

import fastapi
import pydantic

from kubeline.api import access, deps
from kubeline.auth import roles
from kubeline.domain import states

router = fastapi.APIRouter(tags=["stats"])
_RECENT = 10
_MAX_RECENT = 50
_RECENT_HELP = "How many of each pipeline's last runs to list (0: none)"
_SLOWEST = 5
_KINDS = ("succeeded", "failed", "cancelled", "other")
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
        "since": "2025-01-01T00:00:00Z", "total": 3, "failure_rate": 0.33,
        "queued": 0, "running": 1, "days": [{"day": "2025-01-01", "succeeded": 2, "failed": 1,
                                               "cancelled": 0, "other": 0}],
        "heatmap": [[0] * 24 for _ in range(7)], "slowest": [], "recent": {}}]})

    since: dt.datetime
    total: int = pydantic.Field(description="Runs created in the window.")
    failure_rate: float | None = pydantic.Field(description="Failed or timed-out share of the finished runs.")
    queued: int
    running: int
    days: list[DayOut] = pydantic.Field(description="One entry per day (UTC), oldest first, empty days included.")
    heatmap: list[list[int]] = pydantic.Field(description="Runs by weekday (0 = Monday) and hour of day (UTC).")
    slowest: list[SlowOut] = pydantic.Field(description=f"Pipelines by mean run duration, slowest first ({_SLOWEST}).")
    recent: dict[str, list[RecentRunOut]] = pydantic.Field(
        description="The last runs of each pipeline in the window (as many as asked), newest first.")


@router.get("/stats", dependencies=[access.requires(roles.Role.viewer)], response_model=StatsOut)
async def get_stats(
    kl: deps.KL, days: Annotated[int, fastapi.Query(ge=1, le=90, description="Days back from today (UTC)")] = 14,
    recent: Annotated[int, fastapi.Query(ge=0, le=_MAX_RECENT, description=_RECENT_HELP)] = _RECENT,
) -> StatsOut:
    """Runs per day by outcome, failure rate, a weekday-by-hour heatmap, the queue, the slowest pipelines."""
    today = dt.datetime.now(dt.UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    since = today - dt.timedelta(days=days - 1)
    found = await kl.store.run_stats(since=since, recent=recent, slowest=_SLOWEST)
    dates = [(since + dt.timedelta(days=i)).date() for i in range(days)]
    per_day: dict[dt.date, dict[str, int]] = {day: dict.fromkeys(_KINDS, 0) for day in dates}
    heatmap = [[0] * 24 for _ in range(7)]
    total = finished = failed = 0
    for group in found.hours:
        kind = _kind(group.state)
        total += group.count
        heatmap[group.hour.weekday()][group.hour.hour] += group.count
        if (day := per_day.get(group.hour.date())) is not None:
            day[kind] += group.count
        if group.state in states.FINAL_RUN:
            finished += group.count
            failed += group.count if kind == "failed" else 0
    last_runs: dict[str, list[RecentRunOut]] = {}
    for run in found.recent:
        last_runs.setdefault(run.pipeline, []).append(
            RecentRunOut(id=run.id, state=run.state, created_at=run.created_at, duration=run.duration))
    slowest = [SlowOut(pipeline=s.pipeline, runs=s.runs, mean_seconds=s.mean_seconds, max_seconds=s.max_seconds)
               for s in found.slowest]
    return StatsOut(since=since, total=total, failure_rate=failed / finished if finished else None,
                    queued=found.by_state.get(states.RunState.QUEUED, 0),
                    running=found.by_state.get(states.RunState.RUNNING, 0),
                    days=[DayOut(day=day, **per_day[day]) for day in dates], heatmap=heatmap, slowest=slowest,
                    recent=last_runs)


def _kind(state: states.RunState) -> str:
    if state is states.RunState.SUCCEEDED:
        return "succeeded"
    if state in _FAILED:
        return "failed"
    if state is states.RunState.CANCELLED:
        return "cancelled"
    return "other"
