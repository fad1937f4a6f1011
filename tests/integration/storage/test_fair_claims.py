"""The claim is fair: no number of blocked runs of one pipeline (or executor) delays another.

10,000 queued runs that may not start (their pipeline is at ``max_instances``, or their executor
at its cap) sit ahead of one run that may: the claim returns that run, on SQLite and PostgreSQL.
The fixtures are bulk-inserted in one statement (the claim is what is tested, not create_run).
"""

from __future__ import annotations

from typing import Any

import pytest
import sqlalchemy as sa

from kubeline.domain import runs, specs, states
from kubeline.storage import base
from kubeline.storage.sql import claims, rows, tables
from kubeline.storage.sql import store as sql_store

R = states.RunState
BLOCKED = 10_000


def _spec(*, max_instances: int | None = None, executor: str | None = None) -> specs.PipelineSpec:
    return specs.PipelineSpec.model_validate({
        "max_instances": max_instances, "executor": executor,
        "stages": [{"id": "a", "type": "shell", "command": "x"}]})


async def bulk_queue(store: Any, n: int, *, pipeline: str, spec: specs.PipelineSpec) -> list[str]:
    """``n`` queued runs in one INSERT (ids in creation order)."""
    template = rows.run_to_row(runs.Run(id="x", pipeline=pipeline, spec=spec))
    now = runs.new_id()[:12]  # the creation-time part of an id
    ids = [f"{now}{i:010x}" for i in range(n)]
    values = [{**template, "id": run_id} for run_id in ids]
    await store.database.run(lambda conn: conn.execute(sa.insert(tables.runs), values), write=True)
    return ids


async def queue_one(store: Any, *, pipeline: str, spec: specs.PipelineSpec) -> runs.Run:
    run = runs.Run(id=runs.new_id(), pipeline=pipeline, spec=spec)
    return await store.create_run(run, [runs.StageRun(run_id=run.id, stage_id="a")])


async def test_one_free_run_behind_10000_blocked_runs_of_a_capped_pipeline(store: Any) -> None:
    busy = _spec(max_instances=1)
    first = await queue_one(store, pipeline="busy", spec=busy)
    assert [r.id for r in await store.claim_queued_runs(limit=8)] == [first.id]  # busy is now at its cap
    await bulk_queue(store, BLOCKED, pipeline="busy", spec=busy)
    free = await queue_one(store, pipeline="other", spec=_spec())
    claimed = await store.claim_queued_runs(limit=8)
    assert [r.id for r in claimed] == [free.id]
    assert await store.claim_queued_runs(limit=8) == []
    await store.transition_run(first.id, R.SUCCEEDED)
    [next_busy] = await store.claim_queued_runs(limit=8)  # one slot freed: exactly one more, the oldest
    assert next_busy.pipeline == "busy"
    assert len(await store.list_runs(pipeline="busy", states_in=[R.RUNNING])) == 1


async def test_one_free_run_behind_10000_runs_waiting_for_their_executor(store: Any) -> None:
    caps = base.ClaimCaps(max_running=100, per_executor={"docker": 2}, default_executor="local")
    docker = _spec(executor="docker")
    ahead = [await queue_one(store, pipeline="d", spec=docker) for _ in range(2)]
    assert sorted(r.id for r in await store.claim_queued_runs(limit=8, caps=caps)) == sorted(r.id for r in ahead)
    await bulk_queue(store, BLOCKED, pipeline="d", spec=docker)
    free = await queue_one(store, pipeline="l", spec=_spec())
    assert [r.id for r in await store.claim_queued_runs(limit=8, caps=caps)] == [free.id]
    assert await store.claim_queued_runs(limit=8, caps=caps) == []


async def test_several_capped_pipelines_each_get_their_free_instances(store: Any) -> None:
    for name, cap in (("one", 1), ("two", 2), ("three", 3)):
        await bulk_queue(store, 50, pipeline=name, spec=_spec(max_instances=cap))
    claimed = await store.claim_queued_runs(limit=100)
    counts = {p: sum(1 for r in claimed if r.pipeline == p) for p in ("one", "two", "three")}
    assert counts == {"one": 1, "two": 2, "three": 3}
    assert await store.claim_queued_runs(limit=100) == []


async def test_the_global_cap_bounds_the_claim(store: Any) -> None:
    await bulk_queue(store, 30, pipeline="p", spec=_spec())
    caps = base.ClaimCaps(max_running=5)
    assert len(await store.claim_queued_runs(limit=8, caps=caps)) == 5
    assert await store.claim_queued_runs(limit=8, caps=caps) == []


async def test_a_run_cancelled_while_queued_is_not_claimed(store: Any) -> None:
    run = await queue_one(store, pipeline="p", spec=_spec())
    await store.transition_run(run.id, R.CANCELLED, reason="cancelled while queued")
    assert await store.claim_queued_runs(limit=8) == []


async def test_blocked_pipelines_with_older_heads_take_no_place_in_the_claim(store: Any) -> None:
    """Forty pipelines at their cap, each with queued runs older than the free one: a claim of 8
    still finds it (a blocked pipeline is not one of the claim's candidate pipelines)."""
    capped = _spec(max_instances=1)
    for number in range(40):
        name = f"busy-{number:02d}"
        first = await queue_one(store, pipeline=name, spec=capped)
        assert [r.id for r in await store.claim_queued_runs(limit=1, only=[first.id])] == [first.id]
        await bulk_queue(store, 3, pipeline=name, spec=capped)
    free = await queue_one(store, pipeline="other", spec=_spec())
    assert [r.id for r in await store.claim_queued_runs(limit=8)] == [free.id]


async def test_a_later_run_with_a_wider_cap_is_claimed_behind_a_blocked_head(store: Any) -> None:
    """The spec's max_instances went from 1 to 3 while runs waited: the newer run has room (rank 2
    of 3 instances, one running), the older one does not (its own cap is 1)."""
    first = await queue_one(store, pipeline="p", spec=_spec(max_instances=1))
    assert [r.id for r in await store.claim_queued_runs(limit=8)] == [first.id]
    [old] = await bulk_queue(store, 1, pipeline="p", spec=_spec(max_instances=1))
    newer = await queue_one(store, pipeline="p", spec=_spec(max_instances=3))
    assert [r.id for r in await store.claim_queued_runs(limit=8)] == [newer.id]
    assert old in {r.id for r in await store.list_runs(pipeline="p", states_in=[R.QUEUED])}


@pytest.mark.postgres
async def test_a_claim_reads_a_few_index_entries_not_the_blocked_queue(postgres_url: str) -> None:
    """Behind 10,000 blocked runs, the claim's statements read a bounded number of rows: index
    entries returned plus rows scanned, from PostgreSQL's own counters for this transaction (the
    old claim grouped every queued run on each call: 10,000 or more)."""
    store = await sql_store.SqlStore.open(postgres_url)
    try:
        busy = _spec(max_instances=1)
        first = await queue_one(store, pipeline="busy", spec=busy)
        assert [r.id for r in await store.claim_queued_runs(limit=32)] == [first.id]
        await bulk_queue(store, BLOCKED, pipeline="busy", spec=busy)
        free = await queue_one(store, pipeline="other", spec=_spec())

        def claim_and_count(conn: sa.Connection) -> tuple[list[str], int]:
            claimed = claims.claim(conn, limit=32, only=None, now=runs.utcnow())
            read = conn.execute(sa.text(
                "SELECT coalesce(sum(pg_stat_get_xact_tuples_returned(indexrelid)), 0) "
                "+ (SELECT seq_tup_read FROM pg_stat_xact_user_tables WHERE relname = 'runs') "
                "FROM pg_index WHERE indrelid = 'runs'::regclass")).scalar_one()
            return claimed, int(read)

        claimed, read = await store.database.run(claim_and_count, write=True)
        assert claimed == [free.id]
        assert read < 200, f"the claim read {read} rows of runs behind {BLOCKED} blocked runs"
    finally:
        await store.close()
