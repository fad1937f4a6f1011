"""Several real processes on one database (SQLite file and PostgreSQL): each queued run is driven
by one process, every attempt starts exactly once, each schedule fire makes one run, and a
``kill -9`` during running attempts loses nothing."""

from __future__ import annotations

import asyncio
import collections
import datetime as dt
import pathlib
import signal
import time
from typing import Any

import pytest
import sqlalchemy as sa

from kubeline.domain import states
from kubeline.storage.sql import tables

from .helpers import app, pipeline, query, wait_until_final

R = states.RunState
TRIVIAL = pipeline("trivial", {"stages": [{"id": "a", "type": "shell", "command": "true"},
                                          {"id": "b", "type": "shell", "command": "true", "dependsOn": ["a"]}]})


@pytest.mark.timeout(300)
async def test_two_workers_500_queued_runs_every_attempt_once(env: dict[str, str], spawn: Any) -> None:
    async with app(env) as kl:
        await kl.store.upsert_pipeline(TRIVIAL)
        ids = [(await kl.engine.submit(TRIVIAL)).id for _ in range(500)]
    spawn("worker")
    spawn("worker")
    async with app(env) as kl:
        final = await wait_until_final(kl, ids, within=240)
    assert collections.Counter(r.state for r in final) == {R.SUCCEEDED: 500}, {r.error for r in final if r.error}
    url = env["KUBELINE_DATABASE_URL"]
    a = tables.attempts
    per_stage = await query(url, sa.select(a.c.run_id, a.c.stage_id, sa.func.count()).group_by(a.c.run_id, a.c.stage_id))
    assert len(per_stage) == 1000 and {count for *_, count in per_stage} == {1}
    owners = await query(url, sa.select(tables.runs.c.owner).distinct())
    claimed = await query(url, sa.select(sa.func.count()).select_from(tables.events)
                          .where(tables.events.c.reason == "claimed"))
    assert claimed == [(500,)]  # each run claimed once
    assert len(owners) == 2  # both processes drove runs


@pytest.mark.timeout(120)
async def test_two_schedulers_fire_each_time_once(env: dict[str, str], spawn: Any) -> None:
    ticking = pipeline("ticking", {"schedules": [{"id": "every", "interval": 1, "catchup": "none"}],
                                   "stages": [{"id": "a", "type": "shell", "command": "true"}]})
    async with app(env) as kl:
        await kl.store.upsert_pipeline(ticking)
    one, two = spawn("scheduler"), spawn("scheduler")
    await asyncio.sleep(6)
    for proc in (one, two):
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=20)
    async with app(env) as kl:
        fires = await kl.store.list_fires("ticking/every", limit=1000)
        made = await kl.store.list_runs(pipeline="ticking", limit=1000)
    assert len(fires) >= 3
    assert all(f.run_id for f in fires)
    details = [r.triggered_by.detail for r in made]
    assert len(details) == len(set(details)) == len(fires)  # one run per fire, none twice
    assert {r.id for r in made} == {f.run_id for f in fires}


@pytest.mark.timeout(180)
async def test_kill_9_during_running_attempts_then_restart(env: dict[str, str], spawn: Any, tmp_path: pathlib.Path) -> None:
    slow = pipeline("slow", {"stages": [
        {"id": "work", "type": "shell", "command": "echo begin; sleep 4; echo end; echo '{\"ok\": 1}' > $KUBELINE_OUTPUTS"},
        {"id": "after", "type": "shell", "command": "echo after", "dependsOn": ["work"]}]})
    async with app(env) as kl:
        await kl.store.upsert_pipeline(slow)
        ids = [(await kl.engine.submit(slow)).id for _ in range(4)]
    first = spawn("worker", KUBELINE_MAX_RUNNING_RUNS="2")
    async with app(env) as kl:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            running = [a for i in ids for a in await kl.store.list_attempts(i) if a.state is states.AttemptState.RUNNING]
            if len(running) == 2:
                break
            await asyncio.sleep(0.1)
        assert len(running) == 2
    first.send_signal(signal.SIGKILL)  # no cleanup at all: leases stay, attempts keep running
    first.wait(timeout=10)
    spawn("worker", KUBELINE_MAX_RUNNING_RUNS="2")
    async with app(env) as kl:
        final = await wait_until_final(kl, ids, within=90)
        assert [r.state for r in final] == [R.SUCCEEDED] * 4, [(r.state, r.error) for r in final]
        for run_id in ids:
            attempts = await kl.store.list_attempts(run_id)
            assert sorted(a.stage_id for a in attempts) == ["after", "work"]  # nothing started twice
            assert {a.state for a in attempts} == {states.AttemptState.SUCCEEDED}
        for attempt in running:
            text = "\n".join(line.text for line in kl.logs.read(attempt.run_id, stage_id="work"))
            assert "begin" in text and "end" in text and "adopted after a restart" in text
            assert (await kl.store.get_attempt(attempt.id)).outputs == {"ok": 1}


@pytest.mark.timeout(180)
async def test_kill_9_then_restart_keeps_the_real_times(env: dict[str, str], spawn: Any,
                                                        tmp_path: pathlib.Path) -> None:
    """What a stage wrote while no server ran keeps the attempt's own times; the stage, attempt and
    run end when the stage did; the restarted replica (same KUBELINE_REPLICA_ID) reclaims its run
    at once, long before its 60 s lease would have expired.

    The stage waits after 'begin' until the test has killed the server (the file ``go``): on a
    loaded machine the test once saw 'begin' only after the stage had ended and the server had
    finished the run, and then there was nothing to adopt."""
    go = tmp_path / "go"
    timed = pipeline("timed", {"stages": [
        {"id": "work", "type": "shell",
         "command": f"echo begin; until [ -e '{go}' ]; do sleep 0.05; done; sleep 2; echo middle; sleep 1; echo end"}]})
    same = {"KUBELINE_REPLICA_ID": "worker-a", "KUBELINE_LEASE_SECONDS": "60"}
    async with app(env) as kl:
        await kl.store.upsert_pipeline(timed)
        run_id = (await kl.engine.submit(timed)).id
        first = spawn("worker", **same)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            text = [line.text for line in kl.logs.read(run_id, stage_id="work")]
            if "begin" in text:
                break
            await asyncio.sleep(0.05)
        assert "begin" in text
    first.send_signal(signal.SIGKILL)
    first.wait(timeout=10)
    killed = dt.datetime.now(dt.UTC)
    go.touch()
    await asyncio.sleep(5)  # the stage writes 'middle' and 'end' and ends while no server runs
    restarted = dt.datetime.now(dt.UTC)
    spawn("worker", **same)
    async with app(env) as kl:
        [final] = await wait_until_final(kl, [run_id], within=30)  # not after the 60 s lease
        assert final.state is R.SUCCEEDED, final.error
        [attempt] = await kl.store.list_attempts(run_id)
        [stage] = await kl.store.list_stage_runs(run_id)
        lines = {line.text: line.at for line in kl.logs.read(run_id, stage_id="work")}
    assert "attempt 1 adopted after a restart" in lines
    # written while no server ran, stamped then: not the reader's (adoption) time
    assert killed < lines["middle"] < lines["end"] < restarted
    assert 1.5 < (lines["middle"] - killed).total_seconds() < 3.5
    assert 0.5 < (lines["end"] - lines["middle"]).total_seconds() < 2.5
    assert attempt.finished_at is not None and stage.finished_at == attempt.finished_at
    assert attempt.started_at is not None and attempt.started_at <= attempt.finished_at  # also when found running
    assert lines["end"] - dt.timedelta(seconds=0.5) <= attempt.finished_at < restarted
    assert final.finished_at == attempt.finished_at  # not the adoption's time
