"""What the MemoryStore fake offers tests beyond the contract: inspectable state, no aliasing."""

from __future__ import annotations

from kubeline.domain import runs, specs, states
from kubeline.storage import base, memory


async def test_memory_store_is_a_store_and_exposes_its_state() -> None:
    store: base.Store = memory.MemoryStore()
    fake = memory.MemoryStore()
    spec = specs.PipelineSpec(stages=[specs.StageSpec(id="a")])
    run = runs.Run(id=runs.new_id(), pipeline="p", spec=spec, outputs={"k": [1]})
    await fake.create_run(run, [runs.StageRun(run_id=run.id, stage_id="a")])
    run.outputs["k"].append(2)  # the caller's dict is not the stored one
    assert fake.runs[run.id].outputs == {"k": [1]}
    await fake.transition_stage(run.id, "a", states.StageState.PENDING)
    assert [(e.entity, e.to_state) for e in fake.events] == [("run", "queued"), ("stage", "pending")]
    await fake.close()
    assert fake.closed
    assert isinstance(store, memory.MemoryStore)
