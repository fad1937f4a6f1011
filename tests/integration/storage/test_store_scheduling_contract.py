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


def held(found: list[runs.Run]) -> list[base.Fence]:
    """The fences a driver holds for runs it claimed or adopted."""
    return [base.Fence(run_id=r.id, generation=r.lease_generation) for r in found]


async def test_claimed_runs_are_owned_until_their_lease_expires(store: Any) -> None:
    ids = await add_runs(store, 3)
    claimed = await store.claim_queued_runs(limit=2, lease=lease("a"))
    assert [r.id for r in claimed] == ids[:2]
    assert [r.lease_generation for r in claimed] == [1, 1]
    assert await store.adopt_runs(lease("b"), limit=10) == []  # leases still valid
    assert await store.renew_leases(lease("a"), held(claimed)) == ids[:2]  # only running, held runs
    assert await store.renew_leases(lease("b"), held(claimed)) == []
    await store.renew_leases(lease("a", seconds=-1), held(claimed[:1]))  # expired
    adopted = await store.adopt_runs(lease("b"), limit=10)
    assert [(r.id, r.lease_generation) for r in adopted] == [(ids[0], 2)]  # adoption bumps the generation
    assert await store.renew_leases(lease("a"), held(claimed)) == ids[1:2]  # 'a' lost the adopted run
    assert await store.renew_leases(lease("b"), held(adopted)) == ids[:1]


async def test_a_run_that_ended_is_still_held_not_taken_over(store: Any) -> None:
    ids = await add_runs(store, 2)
    claimed = await store.claim_queued_runs(limit=2, lease=lease("a"))
    fence = held(claimed)[0]
    await store.transition_run(ids[0], R.SUCCEEDED, fence=fence)
    assert await store.renew_leases(lease("a", seconds=-1), held(claimed)) == ids  # ended, still its own
    adopted = await store.adopt_runs(lease("b"), limit=10)  # the renewal set the running run's lease
    assert [r.id for r in adopted] == ids[1:]
    assert await store.renew_leases(lease("a"), held(claimed)) == ids[:1]
    assert await store.renew_leases(lease("b"), held(claimed)) == []


async def test_a_claim_returns_each_run_with_its_stage_rows(store: Any) -> None:
    """The driver of a claimed run starts from these rows (no read of its own), so they are the
    stored ones: a rerun's copied stages keep their state and outputs, in position order."""
    spec = specs.PipelineSpec.model_validate({"stages": [{"id": s, "type": "shell", "command": "x"} for s in "zab"]})
    rerun = runs.Run(id=runs.new_id(), pipeline="p", spec=spec)
    await store.create_run(rerun, [
        runs.StageRun(run_id=rerun.id, stage_id="z", state=states.StageState.SUCCEEDED, outputs={"n": 1}),
        runs.StageRun(run_id=rerun.id, stage_id="a"), runs.StageRun(run_id=rerun.id, stage_id="b")])
    [plain] = await add_runs(store, 1)
    claimed = await store.claim_runs(limit=5, lease=lease("a"))
    assert [c.run.id for c in claimed] == sorted([rerun.id, plain])
    stages = {c.run.id: [(s.stage_id, s.state, s.outputs) for s in c.stages] for c in claimed}
    assert stages[rerun.id] == [("z", states.StageState.SUCCEEDED, {"n": 1}), ("a", states.StageState.WAITING, {}),
                                ("b", states.StageState.WAITING, {})]
    assert stages[plain] == [("a", states.StageState.WAITING, {})]
    assert {c.run.id: c.stages for c in claimed} == {r: await store.list_stage_runs(r) for r in stages}


async def test_released_and_ownerless_runs_are_adopted_at_once(store: Any) -> None:
    ids = await add_runs(store, 2)
    mine = await store.claim_queued_runs(limit=1, lease=lease("a"))
    await store.claim_queued_runs(limit=1)  # no lease: e.g. an older process
    await store.release_leases(held(mine))
    adopted = await store.adopt_runs(lease("b"), limit=10)
    assert sorted(r.id for r in adopted) == ids
    await store.transition_run(ids[0], R.SUCCEEDED)
    assert await store.renew_leases(lease("b"), held(adopted)) == ids  # the ended run is still its own


async def test_a_stale_release_does_not_drop_the_new_owners_lease(store: Any) -> None:
    [run_id] = await add_runs(store, 1)
    old = await store.claim_queued_runs(limit=1, lease=lease("a", seconds=-1))
    new = await store.adopt_runs(lease("a"), limit=10)  # same owner name (a restarted replica)
    await store.release_leases(held(old))  # the earlier life's release comes late
    assert await store.adopt_runs(lease("b"), limit=10) == []  # still held by the new generation
    assert await store.renew_leases(lease("a"), held(new)) == [run_id]


async def test_a_restarted_replica_reclaims_its_own_runs_at_once(store: Any) -> None:
    ids = await add_runs(store, 3)
    before = await store.claim_queued_runs(limit=2, lease=lease("r1"))  # its earlier life, killed
    others = await store.claim_queued_runs(limit=1, lease=lease("r2"))  # another live replica
    boot = runs.utcnow() + dt.timedelta(seconds=30)  # restarted now, 30 s leases
    assert await store.adopt_runs(lease("r3"), limit=10, reclaim_before=boot) == []  # not r3's, not expired
    # runs the caller drives already are never adopted (a late renewal must not fence off a live driver)
    assert await store.adopt_runs(lease("r1"), limit=10, reclaim_before=boot, exclude=ids[:2]) == []
    reclaimed = await store.adopt_runs(lease("r1"), limit=10, reclaim_before=boot)
    assert [r.id for r in reclaimed] == ids[:2] and all(r.lease_generation == 2 for r in reclaimed)
    # a lease granted in this life (after the restart) is not taken again
    assert await store.adopt_runs(lease("r1", seconds=60), limit=10, reclaim_before=boot) == []
    assert await store.renew_leases(lease("r1"), held(before)) == []  # the earlier life is fenced off
    assert await store.renew_leases(lease("r2"), held(others)) == ids[2:]


async def test_writes_carrying_a_lost_lease_are_refused(store: Any) -> None:
    [run_id] = await add_runs(store, 1)
    [mine] = await store.claim_queued_runs(limit=1, lease=lease("a", seconds=-1))
    fence = base.Fence(run_id=run_id, generation=mine.lease_generation)
    await store.transition_stage(run_id, "a", states.StageState.PENDING, fence=fence)  # still held: written
    [theirs] = await store.adopt_runs(lease("b"), limit=1)
    attempt = runs.Attempt(id=runs.new_id(), run_id=run_id, stage_id="a", number=1, executor="local")
    refused = [
        store.transition_stage(run_id, "a", states.StageState.RUNNING, fence=fence),
        store.apply([base.NewAttempt(attempt=attempt)], fence=fence),
        store.transition_run(run_id, R.SUCCEEDED, fence=fence),
    ]
    for write in refused:
        with pytest.raises(errors.LeaseLostError) as lost:
            await write
        assert (lost.value.generation, lost.value.current, lost.value.owner) == (1, 2, "b")
        assert str(lost.value).startswith(f"run {run_id}: this process no longer holds its lease (it wrote with "
                                          "generation 1; the run is now at generation 2, owned by b)")
    assert (await store.get_run(run_id)).state is R.RUNNING
    assert [s.state for s in await store.list_stage_runs(run_id)] == [states.StageState.PENDING]
    assert await store.list_attempts(run_id) == []
    ours = base.Fence(run_id=run_id, generation=theirs.lease_generation)
    await store.apply([base.NewAttempt(attempt=attempt)], fence=ours)  # the new owner writes
    assert (await store.transition_run(run_id, R.SUCCEEDED, fence=ours)).state is R.SUCCEEDED


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
    assert await store.latest_fire() is None
    assert await store.claim_fire("p/s", fire)
    assert not await store.claim_fire("p/s", fire)
    assert await store.claim_fire("p/other", fire)
    await store.set_fire_run("p/s", fire, "r1")
    assert not await store.claim_fire("p/s", fire, stale_after=0)  # it has its run
    assert await store.claim_fire("p/s", fire + dt.timedelta(hours=1))
    assert await store.last_fire_times() == {"p/s": fire + dt.timedelta(hours=1), "p/other": fire}
    fires = await store.list_fires("p/s")
    assert [(f.fire_time, f.run_id) for f in fires] == [(fire + dt.timedelta(hours=1), None), (fire, "r1")]
    newest = await store.latest_fire()  # of any schedule: what the System page's scheduler lag reads
    assert (newest.schedule_key, newest.fire_time) == ("p/s", fire + dt.timedelta(hours=1))
    assert newest.created_at >= newest.fire_time  # recorded now, due in 2024


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
