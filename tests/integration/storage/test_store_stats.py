"""``Store.run_stats``: the dashboard's aggregates counted by the database, on SQLite and PostgreSQL."""

from __future__ import annotations

import datetime as dt
import os
from typing import Any

from kubeline.domain import runs, specs, states
from kubeline.storage import base

R = states.RunState
DAY = dt.datetime(2025, 3, 10, tzinfo=dt.UTC)  # a Monday
SPEC = specs.PipelineSpec.model_validate({"stages": [{"id": "work", "type": "shell", "command": "true"}]})


def make_run(*, pipeline: str, run_id: str, **kwargs: Any) -> tuple[runs.Run, list[runs.StageRun]]:
    return (runs.Run(id=run_id, pipeline=pipeline, spec=SPEC, **kwargs),
            [runs.StageRun(run_id=run_id, stage_id="work")])


def run_id_at(at: dt.datetime) -> str:
    """An id as ``runs.new_id`` makes it at ``at`` (its first 12 hex digits are the time in ms)."""
    return f"{int(at.timestamp() * 1000):012x}{os.urandom(5).hex()}"


async def add(store: base.Store, *, pipeline: str, at: dt.datetime, state: R = R.QUEUED,
              seconds: float | None = None) -> runs.Run:
    """A run created at ``at`` and moved to ``state``; a final one ran ``seconds`` from ``at``."""
    run, stages = make_run(pipeline=pipeline, run_id=run_id_at(at), created_at=at)
    created = await store.create_run(run, stages)
    if state is R.QUEUED:
        return created
    if state is R.CANCELLED and seconds is None:  # cancelled while queued: never started
        return await store.transition_run(run.id, R.CANCELLED, finished_at=at + dt.timedelta(seconds=1))
    moved = await store.transition_run(run.id, R.RUNNING, started_at=at)
    if state is R.RUNNING:
        return moved
    assert seconds is not None
    return await store.transition_run(run.id, state, finished_at=at + dt.timedelta(seconds=seconds))


async def test_counts_by_utc_hour_and_state_within_the_window(store: base.Store) -> None:
    await add(store, pipeline="old", at=DAY - dt.timedelta(minutes=1), state=R.SUCCEEDED, seconds=5)
    await add(store, pipeline="a", at=DAY + dt.timedelta(hours=23, minutes=10), state=R.SUCCEEDED, seconds=5)
    await add(store, pipeline="b", at=DAY + dt.timedelta(hours=23, minutes=50), state=R.SUCCEEDED, seconds=5)
    await add(store, pipeline="a", at=DAY + dt.timedelta(hours=23, minutes=55), state=R.FAILED, seconds=5)
    await add(store, pipeline="a", at=DAY + dt.timedelta(days=1, minutes=5), state=R.RUNNING)
    await add(store, pipeline="b", at=DAY + dt.timedelta(days=1, minutes=6))

    found = await store.run_stats(since=DAY, recent=10, slowest=5)

    counts = {(h.hour, h.state): h.count for h in found.hours}
    assert counts == {
        (DAY + dt.timedelta(hours=23), R.SUCCEEDED): 2,
        (DAY + dt.timedelta(hours=23), R.FAILED): 1,
        (DAY + dt.timedelta(days=1), R.RUNNING): 1,
        (DAY + dt.timedelta(days=1), R.QUEUED): 1,
    }
    assert all(h.hour.tzinfo is not None and h.hour.utcoffset() == dt.timedelta(0) for h in found.hours)
    assert found.by_state == {R.SUCCEEDED: 3, R.FAILED: 1, R.RUNNING: 1, R.QUEUED: 1}  # all time


async def test_slowest_pipelines_by_mean_duration_of_finished_runs(store: base.Store) -> None:
    for seconds in (10, 30):
        await add(store, pipeline="slow", at=DAY + dt.timedelta(hours=1, seconds=seconds), state=R.SUCCEEDED,
                  seconds=seconds)
    await add(store, pipeline="slow", at=DAY + dt.timedelta(hours=2), state=R.RUNNING)  # no duration yet
    await add(store, pipeline="fast", at=DAY + dt.timedelta(hours=1), state=R.FAILED, seconds=1.5)
    await add(store, pipeline="fast", at=DAY + dt.timedelta(hours=2), state=R.CANCELLED)  # never started
    await add(store, pipeline="mid", at=DAY + dt.timedelta(hours=3), state=R.TIMED_OUT, seconds=12)
    await add(store, pipeline="slower-but-old", at=DAY - dt.timedelta(hours=1), state=R.SUCCEEDED, seconds=999)

    found = await store.run_stats(since=DAY, recent=10, slowest=2)

    assert [(s.pipeline, s.runs) for s in found.slowest] == [("slow", 2), ("mid", 1)]
    assert abs(found.slowest[0].mean_seconds - 20) < 0.01 and abs(found.slowest[0].max_seconds - 30) < 0.01
    everything = await store.run_stats(since=DAY, recent=10, slowest=5)
    fast = next(s for s in everything.slowest if s.pipeline == "fast")
    assert fast.runs == 1 and abs(fast.mean_seconds - 1.5) < 0.01


async def test_recent_runs_per_pipeline_newest_first_only_in_the_window(store: base.Store) -> None:
    made = [await add(store, pipeline="busy", at=DAY + dt.timedelta(minutes=i), state=R.SUCCEEDED, seconds=1)
            for i in range(5)]
    quiet = await add(store, pipeline="quiet", at=DAY + dt.timedelta(hours=5), state=R.RUNNING)
    await add(store, pipeline="quiet", at=DAY - dt.timedelta(days=3), state=R.SUCCEEDED, seconds=1)
    await add(store, pipeline="gone", at=DAY - dt.timedelta(days=3), state=R.SUCCEEDED, seconds=1)

    found = await store.run_stats(since=DAY, recent=3, slowest=5)

    by_pipeline: dict[str, list[base.RunFacts]] = {}
    for run in found.recent:
        by_pipeline.setdefault(run.pipeline, []).append(run)
    assert set(by_pipeline) == {"busy", "quiet"}
    assert [r.id for r in by_pipeline["busy"]] == [r.id for r in reversed(made)][:3]
    assert [(r.id, r.state, r.duration) for r in by_pipeline["quiet"]] == [(quiet.id, R.RUNNING, None)]
    newest = by_pipeline["busy"][0]
    assert newest.created_at == DAY + dt.timedelta(minutes=4) and newest.duration is not None
    assert abs(newest.duration - 1) < 0.01


async def test_many_pipelines_are_read_in_batches(store: base.Store) -> None:
    """More pipelines than one UNION ALL holds (SQLite allows 500 arms): all of them come back."""
    for i in range(450):
        run, stages = make_run(pipeline=f"p{i:03d}", run_id=run_id_at(DAY + dt.timedelta(seconds=i)),
                               created_at=DAY + dt.timedelta(seconds=i))
        await store.create_run(run, stages)
    found = await store.run_stats(since=DAY, recent=2, slowest=5)
    assert sorted({r.pipeline for r in found.recent}) == [f"p{i:03d}" for i in range(450)]
    assert sum(h.count for h in found.hours) == 450


async def test_an_empty_window(store: base.Store) -> None:
    await add(store, pipeline="a", at=DAY - dt.timedelta(days=1), state=R.SUCCEEDED, seconds=1)
    found = await store.run_stats(since=DAY, recent=10, slowest=5)
    assert (found.hours, found.slowest, found.recent) == ([], [], [])
    assert found.by_state == {R.SUCCEEDED: 1}
