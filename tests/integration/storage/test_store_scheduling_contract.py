"""Store contract for leases, claim caps, schedule states, fires and webhook deliveries
(SQLite and PostgreSQL)."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from kubeline.domain import errors, runs, specs, states
from kubeline.storage import base

R = states.RunState
T0 = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)


async def add_runs(store: Any, n: int, *, executor: str | None = None, pipeline: str = "p") -> list[str]:
    spec = specs.PipelineSpec.model_validate({"executor": executor, "stages": [{"id": "a", "type": "shell", "command": "x"}]})
    ids = sorted(runs.new_id() for _ in range(n))
    for run_id in ids:
        await store.create_run(runs.Run(id=run_id, pipeline=pipeline, spec=spec), [runs.StageRun(run_id=run_id, stage_id="a")])
    return ids


def lease(owner: str, seconds: float = 30) -> base.Lease:
    return base.Lease(owner=owner, until=runs.utcnow() + dt.timedelta(seconds=seconds))


async def test_claimed_runs_are_owned_until_their_lease_expires(store: Any) -> None:
    ids = await add_runs(store, 3)
    claimed = await store.claim_queued_runs(limit=2, lease=lease("a"))
    assert [r.id for r in claimed] == ids[:2]
    assert await store.adopt_runs(lease("b"), limit=10) == []  # leases still valid
    assert await store.renew_leases(lease("a"), ids) == ids[:2]  # only running, owned runs
    assert await store.renew_leases(lease("b"), ids) == []
    await store.renew_leases(lease("a", seconds=-1), ids[:1])  # expired
    adopted = await store.adopt_runs(lease("b"), limit=10)
    assert [r.id for r in adopted] == ids[:1]
    assert await store.renew_leases(lease("a"), ids) == ids[1:2]  # 'a' lost the adopted run


async def test_released_and_ownerless_runs_are_adopted_at_once(store: Any) -> None:
    ids = await add_runs(store, 2)
    await store.claim_queued_runs(limit=1, lease=lease("a"))
    await store.claim_queued_runs(limit=1)  # no lease: e.g. an older process
    await store.release_leases("a", ids[:1])
    assert sorted(r.id for r in await store.adopt_runs(lease("b"), limit=10)) == ids
    await store.transition_run(ids[0], R.SUCCEEDED)
    assert await store.renew_leases(lease("b"), ids) == ids[1:]


async def test_global_and_per_executor_caps(store: Any) -> None:
    await add_runs(store, 3, executor="docker")
    await add_runs(store, 3)
    caps = base.ClaimCaps(max_running=4, per_executor={"docker": 1}, default_executor="local")
    claimed = await store.claim_queued_runs(limit=10, caps=caps)
    assert sorted(r.spec.executor or "local" for r in claimed) == ["docker", "local", "local", "local"]
    assert await store.claim_queued_runs(limit=10, caps=caps) == []
    local = [r for r in claimed if r.spec.executor is None]
    await store.transition_run(local[0].id, R.SUCCEEDED)
    assert await store.claim_queued_runs(limit=10, caps=caps) == []  # below max_running, docker at its cap
    docker = [r for r in claimed if r.spec.executor == "docker"]
    await store.transition_run(docker[0].id, R.SUCCEEDED)
    again = await store.claim_queued_runs(limit=10, caps=caps)
    assert [r.spec.executor for r in again] == ["docker"]


async def test_schedule_states(store: Any) -> None:
    first = await store.ensure_schedule_state("p/nightly", since=T0)
    assert first.enabled is None and first.since == T0
    again = await store.ensure_schedule_state("p/nightly", since=T0 + dt.timedelta(days=1))
    assert again.since == T0  # the first one seen wins
    off = await store.set_schedule_enabled("p/nightly", False)
    assert off.enabled is False and off.since == T0
    fresh = await store.set_schedule_enabled("p/other", True)
    assert fresh.enabled is True
    assert [s.schedule_key for s in await store.list_schedule_states()] == ["p/nightly", "p/other"]
    assert (await store.set_schedule_enabled("p/nightly", None)).enabled is None


async def test_each_fire_is_claimed_once(store: Any) -> None:
    fire = T0 + dt.timedelta(hours=2)
    assert await store.claim_fire("p/s", fire)
    assert not await store.claim_fire("p/s", fire)
    assert await store.claim_fire("p/other", fire)
    await store.set_fire_run("p/s", fire, "r1")
    assert not await store.claim_fire("p/s", fire, stale_after=0)  # it has its run
    assert await store.claim_fire("p/s", fire + dt.timedelta(hours=1))
    assert await store.last_fire_times() == {"p/s": fire + dt.timedelta(hours=1), "p/other": fire}
    fires = await store.list_fires("p/s")
    assert [(f.fire_time, f.run_id) for f in fires] == [(fire + dt.timedelta(hours=1), None), (fire, "r1")]


async def test_a_fire_whose_claimer_died_can_be_taken_over(store: Any) -> None:
    assert await store.claim_fire("p/s", T0)
    assert not await store.claim_fire("p/s", T0, stale_after=60)
    assert await store.claim_fire("p/s", T0, stale_after=-1)


async def test_deliveries_replay_and_rate_limit(store: Any) -> None:
    now = runs.utcnow()
    ok = await store.accept_delivery("p/default", "d1", now=now, rate_limit=2, keep=300)
    assert ok.accepted
    replay = await store.accept_delivery("p/default", "d1", now=now, rate_limit=2, keep=300)
    assert not replay.accepted and replay.replayed
    assert (await store.accept_delivery("p/default", "d2", now=now, rate_limit=2, keep=300)).accepted
    limited = await store.accept_delivery("p/default", "d3", now=now, rate_limit=2, keep=300)
    assert not limited.accepted and not limited.replayed and 1 <= limited.retry_after <= 60
    assert (await store.accept_delivery("p/other", "d3", now=now, rate_limit=2, keep=300)).accepted
    later = now + dt.timedelta(seconds=61)
    assert (await store.accept_delivery("p/default", "d3", now=later, rate_limit=2, keep=300)).accepted
    far = now + dt.timedelta(seconds=400)  # forgotten after ``keep``: no longer a replay
    assert (await store.accept_delivery("p/default", "d1", now=far, rate_limit=2, keep=300)).accepted


def _new_run() -> base.NewRun:
    spec = specs.PipelineSpec.model_validate({"stages": [{"id": "a", "type": "shell", "command": "x"}]})
    run = runs.Run(id=runs.new_id(), pipeline="p", spec=spec)
    return base.NewRun(run=run, stages=[runs.StageRun(run_id=run.id, stage_id="a")])


async def test_a_fire_and_a_delivery_insert_their_run_in_the_same_transaction(store: Any) -> None:
    first, second = _new_run(), _new_run()
    assert await store.claim_fire("p/s", T0, run=first)
    assert not await store.claim_fire("p/s", T0, run=second)  # lost: its run is not inserted
    [fire] = await store.list_fires("p/s")
    assert fire.run_id == first.run.id
    assert [r.id for r in await store.list_runs()] == [first.run.id]
    hook = _new_run()
    verdict = await store.accept_delivery("p/hook", "d1", now=runs.utcnow(), rate_limit=5, keep=600, run=hook)
    assert verdict.accepted
    replay = await store.accept_delivery("p/hook", "d1", now=runs.utcnow(), rate_limit=5, keep=600, run=_new_run())
    assert replay.replayed
    assert {r.id for r in await store.list_runs()} == {first.run.id, hook.run.id}


async def test_a_run_ends_and_its_downstream_run_is_inserted_together(store: Any) -> None:
    parent, child = _new_run(), _new_run()
    await store.create_run(parent.run, parent.stages)
    await store.claim_queued_runs(limit=1)
    await store.transition_run(parent.run.id, R.SUCCEEDED, spawn=[child])
    assert (await store.get_run(child.run.id)).state is R.QUEUED
    again = _new_run()
    with pytest.raises(errors.KubelineError):
        await store.transition_run(parent.run.id, R.SUCCEEDED, spawn=[again])  # refused: final already
    assert {r.id for r in await store.list_runs()} == {parent.run.id, child.run.id}  # rolled back together
