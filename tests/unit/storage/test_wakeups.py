"""Wake-ups in one process: the store's writes wake the waiters of their channel and key."""

from __future__ import annotations

import asyncio

import pytest

from kubeline.domain import errors, runs, specs, states
from kubeline.storage import wakeups
from kubeline.storage.sql import store as sql_store_

C = wakeups.Channel


def _run() -> tuple[runs.Run, list[runs.StageRun]]:
    spec = specs.PipelineSpec.model_validate({"stages": [{"id": "a", "type": "shell", "command": "x"}]})
    run = runs.Run(id=runs.new_id(), pipeline="p", spec=spec)
    return run, [runs.StageRun(run_id=run.id, stage_id="a")]


async def test_waiters_get_the_keys_of_their_channel_only() -> None:
    hub = wakeups.Wakeups()
    async with hub.subscribe(C.EVENTS, key="r1") as one, hub.subscribe(C.EVENTS) as every, \
            hub.subscribe(C.CANCEL) as cancels:
        await hub.publish(C.EVENTS, key="r1")
        await hub.publish(C.EVENTS, key="r2")
        assert await one.wait(within=1) == {"r1"}
        assert await every.wait(within=1) == {"r1", "r2"}
        assert await cancels.wait(within=0.01) == set()  # nothing on its channel: times out
    assert not any(hub._waiters.values())  # unsubscribed on the way out


async def test_a_wake_up_from_another_thread_reaches_the_waiter() -> None:
    hub = wakeups.Wakeups()
    async with hub.subscribe(C.LOGS) as logs:
        await asyncio.to_thread(hub.deliver, [(C.LOGS, "x")])
        assert await logs.wait(within=5) == {"x"}


async def test_store_writes_wake_dispatch_events_and_cancel(sql_store: sql_store_.SqlStore) -> None:
    hub = sql_store.wakeups
    run, stages = _run()
    async with hub.subscribe(C.DISPATCH) as dispatch, hub.subscribe(C.EVENTS, key=run.id) as events, \
            hub.subscribe(C.CANCEL) as cancels:
        await sql_store.create_run(run, stages)
        assert await dispatch.wait(within=1) == {""}
        assert await events.wait(within=1) == {run.id}
        await sql_store.request_cancel(run.id)
        assert await cancels.wait(within=1) == {run.id}
        await sql_store.transition_run(run.id, states.RunState.CANCELLED)
        assert await dispatch.wait(within=1) == {""}  # a slot is free again
        assert await events.wait(within=1) == {run.id}


async def test_a_failed_write_wakes_nobody(sql_store: sql_store_.SqlStore) -> None:
    run, stages = _run()
    await sql_store.create_run(run, stages)
    async with sql_store.wakeups.subscribe(C.DISPATCH) as dispatch:
        with pytest.raises(errors.ConflictError):
            await sql_store.create_run(run, stages)  # the same id again: rolled back
        assert await dispatch.wait(within=0.05) == set()


async def test_count_runs_groups_by_state(sql_store: sql_store_.SqlStore) -> None:
    for _ in range(3):
        await sql_store.create_run(*_run())
    await sql_store.claim_queued_runs(limit=1)
    assert await sql_store.count_runs() == {states.RunState.QUEUED: 2, states.RunState.RUNNING: 1}
    assert await sql_store.count_runs(states_in=[states.RunState.QUEUED]) == {states.RunState.QUEUED: 2}
    assert await sql_store.count_runs(states_in=[states.RunState.SUCCEEDED]) == {}


async def test_a_cancel_that_meets_a_wake_up_is_never_lost() -> None:
    """Python 3.11's ``asyncio.wait_for`` returns normally when the task is cancelled in the loop
    turn where the awaited event fired, and the cancel is gone: a dispatcher loop waiting this way
    never stopped (``serving.cancel(); await serving`` hung the benchmarks). Every turn tried."""
    hub = wakeups.Wakeups()
    for turns in range(6):
        async with hub.subscribe(C.DISPATCH) as dispatch:
            async def loop_forever(waiter: wakeups.Waiter = dispatch) -> None:
                while True:
                    await waiter.wait(within=30)

            task = asyncio.create_task(loop_forever())
            await asyncio.sleep(0.01)  # waiting now
            hub.deliver([(C.DISPATCH, "")])
            for _ in range(turns):
                await asyncio.sleep(0)
            task.cancel()
            done, _ = await asyncio.wait([task], timeout=2)
            assert done and task.cancelled(), f"the cancel was lost {turns} loop turns after the wake-up"
