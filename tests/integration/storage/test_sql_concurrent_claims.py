"""Two SqlStores (two engines, as two server replicas) claiming the same queue at once."""

from __future__ import annotations

import asyncio
import collections
import random

from kubeline.domain import runs, specs, states
from kubeline.storage.sql import SqlStore

CAPS = {"one": 1, "two": 2, "free": None}
CLAIMERS_PER_STORE = 4
MAX_ROUNDS = 500


async def _fill(store: SqlStore, count: int) -> list[runs.Run]:
    made = []
    for i, run_id in enumerate(sorted(runs.new_id() for _ in range(count))):
        pipeline = list(CAPS)[i % len(CAPS)]
        spec = specs.PipelineSpec(max_instances=CAPS[pipeline], stages=[specs.StageSpec(id="a")])
        run = runs.Run(id=run_id, pipeline=pipeline, spec=spec)
        made.append(await store.create_run(run, [runs.StageRun(run_id=run_id, stage_id="a")]))
    return made


def _running(claimed: list[runs.Run], finished: set[str]) -> collections.Counter[str]:
    return collections.Counter(r.pipeline for r in claimed if r.id not in finished)


async def test_two_replicas_never_claim_the_same_run(database_url: str) -> None:
    first, second = await SqlStore.open(database_url), await SqlStore.open(database_url)
    try:
        made = await _fill(first, 60)
        claimed: list[runs.Run] = []
        finished: set[str] = set()
        rng = random.Random(7)
        for _ in range(MAX_ROUNDS):
            if len(finished) == len(made):
                break
            batches = await asyncio.gather(*(
                store.claim_queued_runs(limit=rng.randint(1, 4))
                for store in [first, second] * CLAIMERS_PER_STORE
            ))
            claimed.extend(r for batch in batches for r in batch)
            ids = [r.id for r in claimed]
            assert len(ids) == len(set(ids)), "a run was claimed twice"
            for pipeline, count in _running(claimed, finished).items():
                cap = CAPS[pipeline]
                assert cap is None or count <= cap, f"{pipeline}: {count} running, max_instances {cap}"
            # finish some running runs so capped pipelines get more turns
            for run in claimed:
                if run.id not in finished and rng.random() < 0.5:
                    store = first if rng.random() < 0.5 else second
                    await store.transition_run(run.id, states.RunState.SUCCEEDED)
                    finished.add(run.id)
        assert {r.id for r in claimed} == {r.id for r in made}
        for run in made:
            events = [e for e in await first.list_events(run.id) if e.to_state == "running"]
            assert len(events) == 1
    finally:
        await first.close()
        await second.close()
