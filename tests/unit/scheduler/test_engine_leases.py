"""Run ownership: two engines on one store never drive the same run; a dead engine's runs are
adopted once its lease expires; an engine that lost a lease stops driving. On the SQL store (a
temporary SQLite file), so the claim and the leases are the real ones."""

from __future__ import annotations

import asyncio
import collections
import datetime as dt
import pathlib
from typing import Any

import sqlalchemy as sa

from kubeline.domain import runs, specs, states
from kubeline.engine import engine as engine_
from kubeline.logs import store as log_store
from kubeline.storage.sql import store as sql_store_
from kubeline.storage.sql import tables
from kubeline.testing import executors as fake

R = states.RunState


class Secrets:
    async def resolve(self, names: list[str]) -> dict[str, str]:
        return {}

    def decrypt_env(self, encrypted_env: dict[str, str]) -> dict[str, str]:
        return {}


PIPELINE = runs.Pipeline(name="p", source="api", spec=specs.PipelineSpec.model_validate(
    {"stages": [{"id": "a", "type": "shell", "command": "x"}, {"id": "b", "type": "shell", "command": "x", "dependsOn": ["a"]}]}))


def make(store: sql_store_.SqlStore, executor: fake.FakeExecutor, tmp: pathlib.Path, owner: str, **kw: Any) -> engine_.Engine:
    return engine_.Engine(store=store, executors={"local": executor}, logs=log_store.LogStore(tmp / "logs"),
                          secrets=Secrets(), poll_interval=0.02, owner=owner, **kw)


async def wait_for(predicate: Any, within: float = 60) -> None:
    """Poll until ``predicate`` holds; a deadline in time, not in tries, so a loaded machine only waits longer."""
    deadline = asyncio.get_running_loop().time() + within
    while asyncio.get_running_loop().time() < deadline:
        if await predicate():
            return
        await asyncio.sleep(0.02)
    raise AssertionError("condition not reached")


async def owners(store: sql_store_.SqlStore, run_ids: list[str]) -> dict[str, str | None]:
    query = sa.select(tables.runs.c.id, tables.runs.c.owner).where(tables.runs.c.id.in_(run_ids))
    return await store.database.run(lambda conn: {r.id: r.owner for r in conn.execute(query)}, write=False)


async def test_two_engines_share_the_queue_without_double_starts(tmp_path: pathlib.Path,
                                                                 sql_store: sql_store_.SqlStore) -> None:
    store = sql_store
    executor = fake.FakeExecutor({"a": fake.Outcome(duration=0.01)})
    one, two = make(store, executor, tmp_path, "one"), make(store, executor, tmp_path, "two")
    ids = [(await one.submit(PIPELINE)).id for _ in range(60)]
    serving = [asyncio.create_task(e.serve()) for e in (one, two)]
    try:
        async def all_done() -> bool:
            return all([(await store.get_run(i)).state is R.SUCCEEDED for i in ids])
        await wait_for(all_done)
    finally:
        for task in serving:
            task.cancel()
        await asyncio.gather(*serving, return_exceptions=True)
        await one.shutdown()
        await two.shutdown()
    starts = collections.Counter((s.run_id, s.stage_id) for s in executor.started)
    assert len(starts) == 120 and set(starts.values()) == {1}
    assert set((await owners(store, ids)).values()) <= {"one", "two", None}


async def test_a_live_owner_keeps_its_runs_and_a_dead_ones_are_adopted(tmp_path: pathlib.Path,
                                                                       sql_store: sql_store_.SqlStore) -> None:
    # Leases of 2 s (renewed every ~0.7 s) and checks against the lease's own expiry time, not
    # sleeps: a loaded machine only makes the test slower, never wrong.
    store = sql_store
    executor = fake.FakeExecutor({"a": fake.Outcome(duration=3)})
    first = make(store, executor, tmp_path, "first", lease_seconds=2)
    run = await first.submit(PIPELINE)
    driving = asyncio.create_task(first.execute(run.id))
    await wait_for(lambda: _true(bool(executor.running)))
    second = make(store, executor, tmp_path, "second", lease_seconds=2)
    assert await second.resume() == []  # the first engine is alive: its lease is renewed
    driving.cancel()  # the first engine "dies" without releasing its lease
    await asyncio.gather(driving, return_exceptions=True)
    expires = await lease_expiry(store, run.id)
    assert runs.utcnow() < expires - dt.timedelta(seconds=0.5)
    assert await second.resume() == []  # not yet expired
    await wait_for(lambda: _true(runs.utcnow() > expires))
    [final] = await second.resume()
    assert final.state is R.SUCCEEDED
    assert executor.adopted
    assert len([s for s in executor.started if s.stage_id == "a"]) == 1
    await first.shutdown()
    await second.shutdown()


async def lease_expiry(store: sql_store_.SqlStore, run_id: str) -> dt.datetime:
    query = sa.select(tables.runs.c.lease_expires_at).where(tables.runs.c.id == run_id)
    expires = await store.database.run(lambda conn: conn.execute(query).scalar_one(), write=False)
    return expires if expires.tzinfo else expires.replace(tzinfo=dt.UTC)


async def test_an_engine_that_lost_its_lease_stops_driving(tmp_path: pathlib.Path,
                                                           sql_store: sql_store_.SqlStore) -> None:
    store = sql_store
    executor = fake.FakeExecutor({"a": fake.Outcome(duration=2)})
    slow = make(store, executor, tmp_path, "slow", lease_seconds=0.3)
    run = await slow.submit(PIPELINE)
    driving = asyncio.create_task(slow.execute(run.id))
    await wait_for(lambda: _true(bool(executor.running)))
    taken_over = sa.update(tables.runs).where(tables.runs.c.id == run.id).values(
        owner="other", lease_expires_at=runs.utcnow() + dt.timedelta(seconds=60))
    await store.database.run(lambda conn: conn.execute(taken_over), write=True)
    done = await asyncio.wait_for(asyncio.gather(driving, return_exceptions=True), timeout=5)
    assert isinstance(done[0], asyncio.CancelledError)
    assert (await store.get_run(run.id)).state is R.RUNNING  # left to its new owner
    await slow.shutdown()
    await executor.close()


async def test_execute_waits_while_another_process_owns_the_run(tmp_path: pathlib.Path,
                                                                sql_store: sql_store_.SqlStore) -> None:
    store = sql_store
    executor = fake.FakeExecutor({"a": fake.Outcome(duration=0.3)})
    owner = make(store, executor, tmp_path, "owner")
    follower = make(store, executor, tmp_path, "follower")
    run = await owner.submit(PIPELINE)
    [claimed] = await store.claim_queued_runs(limit=1, lease=owner.lease())
    owner._owned[run.id] = claimed.lease_generation
    driving = owner._start_driver(claimed)
    final = await asyncio.wait_for(follower.execute(run.id), timeout=60)  # a bound, not a speed: a loaded machine only waits longer
    assert final.state is R.SUCCEEDED
    await driving
    assert len(executor.started) == 2  # stages a and b, once each
    await owner.shutdown()
    await follower.shutdown()


async def _true(value: bool) -> bool:
    return value


async def test_resume_adopts_no_more_runs_than_the_engine_drives_at_once(tmp_path: pathlib.Path,
                                                                        sql_store: sql_store_.SqlStore) -> None:
    store = sql_store
    executor = fake.FakeExecutor({"a": fake.Outcome(duration=0.01)})
    dead = make(store, executor, tmp_path, "dead")
    for _ in range(5):
        await dead.submit(PIPELINE)
    await store.claim_queued_runs(limit=5)  # running, no owner: a process that is gone
    heir = make(store, executor, tmp_path, "heir", max_concurrent_attempts=2)
    assert len(await heir.resume()) == 2
    await heir.shutdown()


async def test_a_restarted_replica_reclaims_its_own_runs_at_once(tmp_path: pathlib.Path,
                                                                 sql_store: sql_store_.SqlStore) -> None:
    store = sql_store
    executor = fake.FakeExecutor({"a": fake.Outcome(duration=1.0)})
    before = make(store, executor, tmp_path, "web-0", lease_seconds=60)
    run = await before.submit(PIPELINE)
    driving = asyncio.create_task(before.execute(run.id))
    await wait_for(lambda: _true(bool(executor.running)))
    driving.cancel()  # killed: its 60 s lease stays in the database
    await asyncio.gather(driving, return_exceptions=True)
    other = make(store, executor, tmp_path, "web-1", lease_seconds=60)
    assert await other.resume() == []  # another replica waits for the lease
    after = make(store, executor, tmp_path, "web-0", lease_seconds=60)  # the same replica, restarted
    [final] = await asyncio.wait_for(after.resume(), timeout=30)  # well before the 60 s lease ends
    assert final.state is R.SUCCEEDED
    assert executor.adopted and len([s for s in executor.started if s.stage_id == "a"]) == 1
    await after.shutdown()
    await other.shutdown()


async def test_server_replicas_lease_under_their_stable_identity(tmp_path: pathlib.Path) -> None:
    from kubeline import bootstrap, settings

    config = settings.Settings(home=tmp_path, replica_id="kubeline-server-0", secret_key=None)
    async with bootstrap.open_kubeline(config, replica=True) as kl:
        assert kl.engine.owner == "kubeline-server-0"
    async with bootstrap.open_kubeline(config) as kl:  # the CLI: a name of its own
        assert kl.engine.owner != "kubeline-server-0"
