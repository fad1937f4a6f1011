"""A server process ``kill -9``ed again and again during a burst of short runs, restarted each
time: every run ends succeeded, every stage has exactly one attempt and its script ran exactly
once (each run appends a line to a file). Kills land in every window of an attempt's life: just
after the start and before the handle is stored, and just after the end and before the result is
stored (where results were lost, or stages started twice, before the executor kept what it needs
for the next server)."""

from __future__ import annotations

import asyncio
import collections
import pathlib
import signal
import time
from typing import Any

import pytest
import sqlalchemy as sa

from kubeline.domain import states
from kubeline.executors import local_workdir
from kubeline.storage.sql import tables

from .helpers import app, lines_of, pipeline, query, wait_until_final

R = states.RunState
RUNS = 100


@pytest.mark.timeout(300)
async def test_kill_9_again_and_again_during_a_burst(env: dict[str, str], spawn: Any,
                                                      tmp_path: pathlib.Path) -> None:
    ran = tmp_path / "ran.txt"
    command = f'echo "$KUBELINE_RUN_ID $KUBELINE_STAGE" >> {ran}'
    burst = pipeline("burst", {"stages": [
        {"id": "a", "type": "shell", "command": command},
        {"id": "b", "type": "shell", "command": command, "dependsOn": ["a"]}]})
    same = {"KUBELINE_REPLICA_ID": "burst-worker"}  # a restart reclaims its runs at once
    async with app(env) as kl:
        await kl.store.upsert_pipeline(burst)
        ids = [(await kl.engine.submit(burst)).id for _ in range(RUNS)]
        worker = spawn("worker", **same)
        kills = 0
        deadline = time.monotonic() + 200
        for goal in (10, 25, 40, 55, 70, 85):  # kill at these many finished runs
            while time.monotonic() < deadline:
                done = sum(1 for line in lines_of(ran) if line.endswith(" b"))
                if done >= goal:
                    break
                await asyncio.sleep(0.01)
            worker.send_signal(signal.SIGKILL)
            worker.wait(timeout=10)
            kills += 1
            worker = spawn("worker", **same)
        final = await wait_until_final(kl, ids, within=max(deadline - time.monotonic(), 30))
    assert kills == 6
    assert collections.Counter(r.state for r in final) == {R.SUCCEEDED: RUNS}, \
        [(r.id, r.state.value, r.error) for r in final if r.state is not R.SUCCEEDED][:5]
    a = tables.attempts
    per_stage = await query(env["KUBELINE_DATABASE_URL"], sa.select(a.c.run_id, a.c.stage_id, sa.func.count())
                            .group_by(a.c.run_id, a.c.stage_id))
    assert len(per_stage) == 2 * RUNS
    twice = [row for row in per_stage if row[2] != 1]
    assert twice == [], await _history(env, twice[0][0])  # no stage started twice
    scripts = collections.Counter(lines_of(ran))
    assert len(scripts) == 2 * RUNS and {line.split()[0] for line in scripts} == set(ids)
    assert [line for line, count in scripts.items() if count != 1] == []  # no script ran twice
    work = local_workdir.default_work_dir(pathlib.Path(env["KUBELINE_HOME"]))  # as the servers chose it

    def left() -> list[str]:  # a closed server removes the work dir once empty
        return [p.name for p in work.iterdir() if not p.name.startswith(".")] if work.exists() else []
    deadline = time.monotonic() + 30  # what the killed servers left is dropped by the sweep
    while left() and time.monotonic() < deadline:
        await asyncio.sleep(0.2)
    assert left() == []


async def _history(env: dict[str, str], run_id: str) -> tuple[list[Any], list[Any]]:
    """A run's attempts and events, to say how a stage came to start twice."""
    async with app(env) as kl:
        attempts = [(a.stage_id, a.number, a.state.value, a.error, bool(a.handle))
                    for a in await kl.store.list_attempts(run_id)]
        events = [(e.entity, e.entity_id, e.from_state, e.to_state, e.reason)
                  for e in await kl.store.list_events(run_id)]
    return attempts, events
