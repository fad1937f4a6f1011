"""Wake-ups across processes on PostgreSQL: two stores (two replicas) on one database.

A write committed through one store wakes the waiters of the other through LISTEN/NOTIFY; a
``publish`` reaches the other store too; a killed LISTEN connection is replaced and the waiters
are woken meanwhile (they re-read the store). An engine whose safety poll is a minute starts a
run queued through the other store at once.
"""

from __future__ import annotations

import asyncio
import pathlib

import psycopg
import pytest

from kubeline.domain import runs, specs, states
from kubeline.engine import engine as engine_
from kubeline.logs import store as log_store
from kubeline.storage import wakeups
from kubeline.storage.sql import SqlStore
from kubeline.testing import executors as fake

pytestmark = pytest.mark.postgres
C = wakeups.Channel
SPEC = specs.PipelineSpec.model_validate({"stages": [{"id": "a", "type": "shell", "command": "x"}]})


def _run() -> tuple[runs.Run, list[runs.StageRun]]:
    run = runs.Run(id=runs.new_id(), pipeline="p", spec=SPEC)
    return run, [runs.StageRun(run_id=run.id, stage_id="a")]


class _Secrets:
    async def resolve(self, names: list[str]) -> dict[str, str]:
        return {}

    def decrypt_env(self, encrypted_env: dict[str, str]) -> dict[str, str]:
        return {}


async def test_a_commit_in_one_replica_wakes_the_other(postgres_url: str) -> None:
    one, two = await SqlStore.open(postgres_url), await SqlStore.open(postgres_url)
    try:
        run, stages = _run()
        async with two.wakeups.subscribe(C.DISPATCH) as dispatch, \
                two.wakeups.subscribe(C.EVENTS, key=run.id) as events, two.wakeups.subscribe(C.CANCEL) as cancels:
            await one.create_run(run, stages)
            assert await dispatch.wait(within=5) == {""}
            assert await events.wait(within=5) == {run.id}
            await one.request_cancel(run.id)
            assert await cancels.wait(within=5) == {run.id}
        async with two.wakeups.subscribe(C.LOGS, key="r/a/1") as logs:
            await one.wakeups.publish(C.LOGS, key="r/a/1")
            assert await logs.wait(within=5) == {"r/a/1"}
    finally:
        await one.close()
        await two.close()


async def test_the_listener_reconnects_after_its_connection_is_killed(postgres_url: str) -> None:
    one, two = await SqlStore.open(postgres_url), await SqlStore.open(postgres_url)
    try:
        assert two.listener is not None
        async with two.wakeups.subscribe(C.LOGS) as logs:
            dsn = one.database.url.set(drivername="postgresql").render_as_string(hide_password=False)
            async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as admin:
                await admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                                    "WHERE query LIKE 'LISTEN%' AND pid <> pg_backend_pid()")
            assert await logs.wait(within=5) == {""}  # woken: a notice may have been lost
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 20
            got: set[str] = set()
            while "after" not in got and loop.time() < deadline:
                await one.wakeups.publish(C.LOGS, key="after")
                got |= await logs.wait(within=0.5)
            assert "after" in got
    finally:
        await one.close()
        await two.close()


async def test_an_engine_starts_a_run_queued_by_another_replica_without_polling(
    postgres_url: str, tmp_path: pathlib.Path
) -> None:
    one, two = await SqlStore.open(postgres_url), await SqlStore.open(postgres_url)
    engine = engine_.Engine(store=two, executors={"local": fake.FakeExecutor()}, logs=log_store.LogStore(tmp_path),
                            secrets=_Secrets(), poll_interval=60.0)
    serving = asyncio.create_task(engine.serve())
    try:
        await asyncio.sleep(0.5)  # the dispatcher is waiting (its next poll is a minute away)
        run, stages = _run()
        await one.create_run(run, stages)
        async with one.wakeups.subscribe(C.EVENTS, key=run.id) as events:
            for _ in range(100):
                if states.is_final((await one.get_run(run.id)).state):
                    break
                await events.wait(within=0.2)
        assert (await one.get_run(run.id)).state is states.RunState.SUCCEEDED
    finally:
        serving.cancel()
        await asyncio.gather(serving, return_exceptions=True)
        await engine.shutdown()
        await one.close()
        await two.close()
