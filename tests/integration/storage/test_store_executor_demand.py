"""``Store.executor_demand``: what a worker pool's scaler counts (queued runs per pipeline, live
attempts per pool from their handle, attempts not yet handed over per stage), on SQLite and
PostgreSQL (the pool is read from the JSON handle in the GROUP BY)."""

from __future__ import annotations

from kubeline.domain import runs, specs, states
from kubeline.storage import base

SPEC = specs.PipelineSpec.model_validate({"executor": "kubernetes-pool", "stages": [
    {"id": "a", "file": "a.py"}, {"id": "b", "file": "b.py"}]})


async def new_run(store: base.Store, pipeline: str) -> runs.Run:
    run = runs.Run(id=runs.new_id(), pipeline=pipeline, spec=SPEC)
    return await store.create_run(run, [runs.StageRun(run_id=run.id, stage_id=s.id) for s in SPEC.stages])


async def attempt(store: base.Store, run: runs.Run, stage: str, *, executor: str = "kubernetes-pool",
                  handle: dict[str, object] | None = None) -> None:
    new = runs.Attempt(id=runs.new_id(), run_id=run.id, stage_id=stage, number=1, executor=executor)
    moves: list[base.Move] = [base.StageMove(run_id=run.id, stage_id=stage, to=states.StageState.PENDING),
                              base.NewAttempt(attempt=new)]
    if handle is not None:
        moves.append(base.AttemptMove(attempt_id=new.id, to=states.AttemptState.RUNNING, fields={"handle": handle}))
    await store.apply(moves)


async def test_counts_by_pipeline_pool_and_stage_without_reading_the_runs(store: base.Store) -> None:
    for name in ("etl", "report"):
        await store.upsert_pipeline(runs.Pipeline(name=name, spec=SPEC, source="api"))
    for _ in range(3):
        await new_run(store, "etl")
    await new_run(store, "report")
    running = []
    for _ in range(2):
        run = await new_run(store, "etl")
        running.append(await store.transition_run(run.id, states.RunState.RUNNING))
    await attempt(store, running[0], "a", handle={"attempt_id": "x", "pool": "fast", "pod": None})
    await attempt(store, running[0], "b", handle={"attempt_id": "y", "pool": "fast", "pod": "p-1"})
    await attempt(store, running[1], "a", handle={"attempt_id": "z", "pool": "slow"})
    await attempt(store, running[1], "b")  # recorded, not yet handed to the executor
    other = await store.transition_run((await new_run(store, "report")).id, states.RunState.RUNNING)
    await attempt(store, other, "a", executor="kubernetes", handle={"job": "j", "pool": "not-a-pool"})

    found = await store.executor_demand(executor="kubernetes-pool")

    assert found.queued_runs == {"etl": 3, "report": 1}
    assert found.held == {"fast": 2, "slow": 1}
    assert found.unsent == {("etl", "b"): 1}
    assert set(found.pipelines) == {"etl", "report"}
    assert found.pipelines["etl"].spec == SPEC
