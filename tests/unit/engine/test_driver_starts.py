"""The driver records the stages a success lets start in the same transaction as that success
(and, for a stage that ended at once, that stage's start too).

These pin what must not change with that shortcut: the order of events, one attempt per start,
the parallelism limit when several stages finish at once, and no new starts once cancelled.
"""

from __future__ import annotations

import asyncio
import pathlib
from collections.abc import Sequence
from typing import Any

import pytest

from kubeline.domain import runs, specs, states
from kubeline.engine import driver
from kubeline.engine import engine as engine_
from kubeline.logs import store as log_store
from kubeline.storage import base
from kubeline.storage.sql import store as sql_store_
from kubeline.testing import executors as fake


class SlowStore(sql_store_.SqlStore):
    """The SQL store with batches that take a moment longer, so finishing stages overlap as on a
    busy database."""

    def __init__(self, store: sql_store_.SqlStore) -> None:
        super().__init__(store.database)
        self.transactions: list[list[str]] = []

    async def apply(self, moves: Sequence[base.Move], *,
                    fence: base.Fence | None = None) -> list[runs.StageRun | runs.Attempt | runs.Run]:
        self.transactions.append([_describe(m) for m in moves])
        await asyncio.sleep(0.01)
        return await super().apply(moves, fence=fence)


def _describe(move: base.Move) -> str:
    if isinstance(move, base.StageMove):
        return f"stage {move.stage_id}->{move.to.value}"
    if isinstance(move, base.AttemptMove):
        return f"attempt->{move.to.value}"
    if isinstance(move, base.RunMove):
        return f"run->{move.to.value}" + "".join(f" +{new.run.pipeline}" for new in move.spawn)
    return f"new attempt {move.attempt.stage_id}#{move.attempt.number}"


class Secrets:
    async def resolve(self, names: list[str]) -> dict[str, str]:
        return {}

    def decrypt_env(self, encrypted_env: dict[str, str]) -> dict[str, str]:
        return dict(encrypted_env)


@pytest.fixture
def make_engine(tmp_path: pathlib.Path, sql_store: sql_store_.SqlStore):  # type: ignore[no-untyped-def]
    def _make(outcomes: dict[str, Any]) -> tuple[engine_.Engine, fake.FakeExecutor, SlowStore]:
        executor = fake.FakeExecutor(outcomes)
        store = SlowStore(sql_store)
        engine = engine_.Engine(store=store, executors={"local": executor},
                                logs=log_store.LogStore(tmp_path / "logs"), secrets=Secrets(),
                                poll_interval=0.05)
        return engine, executor, store

    return _make


def pipeline(spec: dict[str, Any]) -> runs.Pipeline:
    return runs.Pipeline(name="p", spec=specs.PipelineSpec.model_validate(spec), source="api")


async def test_a_chain_records_success_and_next_start_together_in_the_same_order(make_engine):
    engine, executor, store = make_engine({})
    spec = {"stages": [{"id": "a", "type": "shell", "command": "x"},
                       {"id": "b", "type": "shell", "command": "x", "dependsOn": ["a"]},
                       {"id": "c", "type": "shell", "command": "x", "dependsOn": ["b"]}]}
    final = await engine.execute((await engine.submit(pipeline(spec))).id)
    assert final.state is states.RunState.SUCCEEDED
    assert [s.stage_id for s in executor.started] == ["a", "b", "c"]
    # a stage that ended at once: its start, its end and the next start in one transaction
    assert ["attempt->running", "stage a->running", "attempt->succeeded", "stage a->succeeded", "stage b->pending",
            "new attempt b#1"] in store.transactions
    events = [(e.entity, e.to_state, e.reason) for e in await engine.store.list_events(final.id)
              if e.entity in ("stage", "attempt")]
    b_pending = events.index(("stage", "pending", "dependencies succeeded"))
    assert events[b_pending - 1] == ("stage", "succeeded", "attempt 1 succeeded")
    assert events[b_pending + 1][:2] == ("attempt", "pending")
    for stage_run in await engine.store.list_stage_runs(final.id):
        assert stage_run.attempts == 1


async def test_the_last_stage_ends_its_run_in_the_same_transaction(make_engine):
    engine, _, store = make_engine({"b": fake.Outcome(exit_code=3)})
    downstream = pipeline({"stages": [{"id": "x", "type": "shell", "command": "x"}]})
    downstream = runs.Pipeline(name="after", spec=downstream.spec, source="api")
    await engine.store.upsert_pipeline(downstream)
    chain = await engine.submit(pipeline({"downstream": [{"pipeline": "after", "on": "failure"}], "stages": [
        {"id": "a", "type": "shell", "command": "x"}, {"id": "b", "type": "shell", "command": "x", "dependsOn": ["a"]}]}))
    store.transactions.clear()
    final = await engine.execute(chain.id)
    assert (final.state, final.error) == (states.RunState.FAILED, "stage 'b' failed: exited with code 3")
    assert store.transactions[-1] == ["attempt->running", "stage b->running", "attempt->failed", "stage b->failed",
                                      "run->failed +after"]
    events = [(e.entity, e.to_state) for e in await engine.store.list_events(final.id)]
    assert events[-3:] == [("attempt", "failed"), ("stage", "failed"), ("run", "failed")]
    stages = await engine.store.list_stage_runs(final.id)
    assert final.finished_at is not None and final.finished_at >= max(s.finished_at for s in stages if s.finished_at)
    [after] = await engine.store.list_runs(pipeline="after")
    assert (after.parent_run_id, after.state) == (final.id, states.RunState.QUEUED)  # spawned with the end

    skipped = await engine.submit(pipeline({"stages": [  # a stage left to skip: the run ends on its own
        {"id": "a", "type": "shell", "command": "x"}, {"id": "b", "type": "shell", "command": "x", "dependsOn": ["a"]},
        {"id": "c", "type": "shell", "command": "x", "dependsOn": ["b"]}]}))
    store.transactions.clear()
    final = await engine.execute(skipped.id)
    assert final.state is states.RunState.FAILED
    # the skip and the run's end are transactions of their own (every move goes through apply)
    assert store.transactions[-2:] == [["stage c->skipped"], ["run->failed"]]
    assert [s.state for s in await engine.store.list_stage_runs(final.id)] == [
        states.StageState.SUCCEEDED, states.StageState.FAILED, states.StageState.SKIPPED]


async def test_a_stage_longer_than_quick_end_is_recorded_running_before_it_ends(make_engine):
    engine, executor, store = make_engine({"a": fake.Outcome(duration=driver.QUICK_END * 4)})  # not Recoverable:
    # its handle is recorded after a few turns of the loop, well within QUICK_END
    run = await engine.submit(pipeline({"stages": [{"id": "a", "type": "shell", "command": "x"}]}))
    execution = asyncio.create_task(engine.execute(run.id))
    while not executor.running:
        await asyncio.sleep(0.002)
    await asyncio.sleep(driver.QUICK_END * 2)
    [attempt] = await engine.store.list_attempts(run.id)
    assert attempt.state is states.AttemptState.RUNNING and attempt.handle  # adoptable by its handle meanwhile
    final = await execution
    assert final.state is states.RunState.SUCCEEDED
    assert store.transactions[-2:] == [["attempt->running", "stage a->running"],
                                       ["attempt->succeeded", "stage a->succeeded", "run->succeeded"]]


async def test_stages_finishing_together_respect_parallelism_and_start_each_once(make_engine):
    engine, executor, _ = make_engine({k: fake.Outcome(duration=0.03) for k in "abcdef"})
    spec = {"parallelism": 2, "stages": [{"id": k, "type": "shell", "command": "x"} for k in "abcdef"]}
    run = await engine.submit(pipeline(spec))
    peak = 0

    async def watch() -> None:
        nonlocal peak
        while True:
            peak = max(peak, len(executor.running))
            await asyncio.sleep(0.002)

    watcher = asyncio.create_task(watch())
    final = await engine.execute(run.id)
    watcher.cancel()
    assert final.state is states.RunState.SUCCEEDED
    assert sorted(s.stage_id for s in executor.started) == list("abcdef")
    assert peak == 2
    attempts = await engine.store.list_attempts(final.id)
    assert sorted(a.stage_id for a in attempts) == list("abcdef")


async def test_a_diamond_starts_the_join_once_after_both_branches(make_engine):
    engine, executor, _ = make_engine({"b": fake.Outcome(duration=0.02), "c": fake.Outcome(duration=0.02)})
    spec = {"stages": [{"id": "a", "type": "shell", "command": "x"},
                       {"id": "b", "type": "shell", "command": "x", "dependsOn": ["a"]},
                       {"id": "c", "type": "shell", "command": "x", "dependsOn": ["a"]},
                       {"id": "d", "type": "shell", "command": "x", "dependsOn": ["b", "c"]}]}
    final = await engine.execute((await engine.submit(pipeline(spec))).id)
    assert final.state is states.RunState.SUCCEEDED
    started = [s.stage_id for s in executor.started]
    assert started[0] == "a" and sorted(started[1:3]) == ["b", "c"] and started[3] == "d"
    assert len(await engine.store.list_attempts(final.id)) == 4


async def test_no_new_start_once_the_run_is_being_cancelled(make_engine):
    engine, executor, _ = make_engine({"a": fake.Outcome(duration=0.05)})
    spec = {"stages": [{"id": "a", "type": "shell", "command": "x"},
                       {"id": "b", "type": "shell", "command": "x", "dependsOn": ["a"]}]}
    run = await engine.submit(pipeline(spec))
    execution = asyncio.create_task(engine.execute(run.id))
    while not executor.running:
        await asyncio.sleep(0.005)
    await engine.cancel(run.id)
    final = await execution
    assert final.state is states.RunState.CANCELLED
    assert [s.stage_id for s in executor.started] == ["a"]
