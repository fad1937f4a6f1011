"""Fencing with real engines on SQLite and PostgreSQL: a replica that stalled past its lease and
whose run another replica adopted cannot write the run's state any more; it stops driving the run
with ``LeaseLostError`` and the new owner ends it, every stage started once."""

from __future__ import annotations

import asyncio
import collections
import datetime as dt
import logging
import pathlib
from typing import Any

import pytest
import sqlalchemy as sa

from kubeline.domain import runs, specs, states
from kubeline.engine import engine as engine_
from kubeline.logs import store as log_store
from kubeline.storage.sql import tables
from kubeline.testing import executors as fake

R = states.RunState
PIPELINE = runs.Pipeline(name="p", source="api", spec=specs.PipelineSpec.model_validate({"stages": [
    {"id": "a", "type": "shell", "command": "x"},
    {"id": "b", "type": "shell", "command": "x", "dependsOn": ["a"]}]}))


class Secrets:
    async def resolve(self, names: list[str]) -> dict[str, str]:
        return {}

    def decrypt_env(self, encrypted_env: dict[str, str]) -> dict[str, str]:
        return {}


def make(store: Any, executor: fake.FakeExecutor, tmp: pathlib.Path, owner: str) -> engine_.Engine:
    return engine_.Engine(store=store, executors={"local": executor}, logs=log_store.LogStore(tmp / "logs"),
                          secrets=Secrets(), poll_interval=0.05, owner=owner, lease_seconds=60)


@pytest.mark.timeout(60)
async def test_a_replica_whose_lease_was_taken_over_cannot_write_the_run(
        store: Any, tmp_path: pathlib.Path, caplog: pytest.LogCaptureFixture) -> None:
    executor = fake.FakeExecutor({"a": fake.Outcome(duration=1.5)})
    stalled, heir = make(store, executor, tmp_path, "stalled"), make(store, executor, tmp_path, "heir")
    await store.upsert_pipeline(PIPELINE)
    run = await stalled.submit(PIPELINE)
    driving = asyncio.create_task(stalled.execute(run.id))
    # until its attempt is recorded running: between the start and that record, an adopter cannot
    # know the attempt runs (a fake one leaves no trace to find), so it would start the stage again
    while not [a for a in await store.list_attempts(run.id) if a.state is states.AttemptState.RUNNING]:
        await asyncio.sleep(0.02)
    # the stalled replica misses its renewals: its lease runs out while its driver still runs
    expired = sa.update(tables.runs).where(tables.runs.c.id == run.id).values(
        lease_expires_at=runs.utcnow() - dt.timedelta(seconds=1))
    await store.database.run(lambda conn: conn.execute(expired), write=True)
    with caplog.at_level(logging.WARNING, logger="kubeline.engine.engine"):
        [final] = await heir.resume()  # adopts the run and its live attempt, drives it to the end
        assert final.state is R.SUCCEEDED
        followed = await asyncio.wait_for(driving, timeout=20)  # stops driving, follows to the end
    assert followed.state is R.SUCCEEDED
    assert any("no longer holds its lease" in r.getMessage() and "owned by heir" in r.getMessage()
               for r in caplog.records)
    starts = collections.Counter(s.stage_id for s in executor.started)
    assert starts == {"a": 1, "b": 1}  # the stalled replica did not start b (its write was refused)
    attempts = await store.list_attempts(run.id)
    assert sorted((a.stage_id, a.state) for a in attempts) == [("a", states.AttemptState.SUCCEEDED),
                                                                ("b", states.AttemptState.SUCCEEDED)]
    ends = [e for e in await store.list_events(run.id) if e.entity == "run" and e.to_state == R.SUCCEEDED.value]
    assert len(ends) == 1
    row = await store.database.run(lambda conn: conn.execute(
        sa.select(tables.runs.c.owner, tables.runs.c.lease_generation).where(tables.runs.c.id == run.id)).one(),
        write=False)
    assert tuple(row) == ("heir", 2)
    await stalled.shutdown()
    await heir.shutdown()
    await executor.close()
