"""A claim that records each claimed run's first attempts in its own transaction
(``Store.claim_runs(start=...)``), on SQLite and PostgreSQL: the moves are applied as ``apply``
applies them (checked by the state rules, fenced by the run's new lease generation, with their
events), and a run whose start cannot be made is still claimed, for its driver to start."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from kubeline.domain import errors, runs, specs, states
from kubeline.storage import base

S, A, R = states.StageState, states.AttemptState, states.RunState
SPEC = specs.PipelineSpec.model_validate({"stages": [{"id": "only", "type": "shell", "command": "x"}]})


async def queued(store: Any) -> runs.Run:
    run = runs.Run(id=runs.new_id(), pipeline="p", spec=SPEC)
    await store.create_run(run, [runs.StageRun(run_id=run.id, stage_id="only")])
    return run


def lease() -> base.Lease:
    return base.Lease(owner="me", until=runs.utcnow() + dt.timedelta(hours=1))


async def test_the_first_attempts_are_recorded_by_the_claim(store: Any) -> None:
    ids = sorted([(await queued(store)).id for _ in range(3)])
    made: dict[str, runs.Attempt] = {}

    def start(run: runs.Run, stages: list[runs.StageRun]) -> list[base.Move]:
        assert [(s.stage_id, s.state, s.attempts) for s in stages] == [("only", S.WAITING, 0)]
        assert run.state is R.RUNNING
        made[run.id] = runs.Attempt(id=runs.new_id(), run_id=run.id, stage_id="only", number=1, executor="local")
        return [base.StageMove(run_id=run.id, stage_id="only", to=S.PENDING, reason="dependencies succeeded"),
                base.NewAttempt(attempt=made[run.id])]

    claimed = await store.claim_runs(limit=10, lease=lease(), start=start)
    assert sorted(c.run.id for c in claimed) == ids
    for new in claimed:
        assert new.started is not None
        stage, attempt = new.started
        assert (stage.state, attempt) == (S.PENDING, made[new.run.id])  # the stage as its move left it
        assert await store.list_attempts(new.run.id) == [made[new.run.id]]
        [stored] = await store.list_stage_runs(new.run.id)
        assert (stored.state, stored.attempts) == (S.PENDING, 1)
        seen = [(e.entity, e.to_state) for e in await store.list_events(new.run.id)]
        assert seen == [("run", "queued"), ("run", "running"), ("stage", "pending"), ("attempt", "pending")]


async def test_a_start_the_rules_refuse_leaves_the_run_claimed_and_unstarted(store: Any) -> None:
    good, bad = await queued(store), await queued(store)

    def start(run: runs.Run, stages: list[runs.StageRun]) -> list[base.Move]:
        if run.id == bad.id:  # waiting -> succeeded is not a move the rules allow
            return [base.StageMove(run_id=run.id, stage_id="only", to=S.SUCCEEDED)]
        return [base.StageMove(run_id=run.id, stage_id="only", to=S.PENDING),
                base.NewAttempt(attempt=runs.Attempt(id=runs.new_id(), run_id=run.id, stage_id="only", number=1,
                                                     executor="local"))]

    claimed = {c.run.id: c for c in await store.claim_runs(limit=10, lease=lease(), start=start)}
    assert claimed[bad.id].started is None and claimed[bad.id].run.state is R.RUNNING
    assert claimed[good.id].started is not None
    assert await store.list_attempts(bad.id) == []
    [stage] = await store.list_stage_runs(bad.id)
    assert stage.state is S.WAITING


async def test_a_start_that_raises_leaves_the_run_claimed_and_unstarted(store: Any) -> None:
    run = await queued(store)

    def start(run: runs.Run, stages: list[runs.StageRun]) -> list[base.Move]:
        raise errors.InvalidInputError("no start for this one")

    [claimed] = await store.claim_runs(limit=1, lease=lease(), start=start)
    assert (claimed.run.id, claimed.started) == (run.id, None)
    assert (await store.get_run(run.id)).state is R.RUNNING


async def test_the_started_moves_carry_the_claims_lease_generation(store: Any) -> None:
    run = await queued(store)
    attempt = runs.Attempt(id=runs.new_id(), run_id=run.id, stage_id="only", number=1, executor="local")

    def start(run: runs.Run, stages: list[runs.StageRun]) -> list[base.Move]:
        return [base.StageMove(run_id=run.id, stage_id="only", to=S.PENDING), base.NewAttempt(attempt=attempt)]

    [claimed] = await store.claim_runs(limit=1, lease=lease(), start=start)
    assert claimed.run.lease_generation == 1
    fence = base.Fence(run_id=run.id, generation=claimed.run.lease_generation)
    await store.apply([base.AttemptMove(attempt_id=attempt.id, to=A.RUNNING, fields={"handle": {"pid": 1}})],
                      fence=fence)  # the driver's next write, with the generation the claim gave
    stale = base.Fence(run_id=run.id, generation=0)
    with pytest.raises(errors.LeaseLostError):
        await store.apply([base.AttemptMove(attempt_id=attempt.id, to=A.SUCCEEDED)], fence=stale)
