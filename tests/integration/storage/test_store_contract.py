"""The Store contract, run against SqlStore on SQLite and SqlStore on PostgreSQL."""

from __future__ import annotations

import collections
import dataclasses
import datetime as dt
from typing import Any

import pytest

from kubeline.domain import errors, runs, specs, states
from kubeline.storage import base

R, S, A = states.RunState, states.StageState, states.AttemptState


def make_spec(*, stages: tuple[str, ...] = ("fetch", "load"), max_instances: int | None = None) -> specs.PipelineSpec:
    return specs.PipelineSpec.model_validate({
        "description": "contract",
        "max_instances": max_instances,
        "env": {"REGION": "eu", "TOKEN": {"valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}}},
        "retries": {"attempts": 2, "strategy": "exponential", "delay": 1},
        "resources": {"limits": {"cpu": "1", "memory": "1Gi"}},
        "schedules": [{"cron": "0 2 * * *", "timezone": "Europe/Berlin", "inputs": {"day": "x"}}],
        "inputs": {"day": {"type": "string", "default": "today"}},
        "stages": [
            {"id": sid, "type": "python", "dependsOn": [stages[i - 1]] if i else []}
            for i, sid in enumerate(stages)
        ],
    })


def make_run(
    *, pipeline: str = "sales", max_instances: int | None = None, run_id: str | None = None,
    **kwargs: Any,
) -> tuple[runs.Run, list[runs.StageRun]]:
    run_id = run_id or runs.new_id()
    spec = make_spec(max_instances=max_instances)
    run = runs.Run(
        id=run_id, pipeline=pipeline, spec=spec, inputs={"day": "2024-01-01", "n": [1, 2]},
        triggered_by=runs.TriggeredBy(kind=runs.TriggerKind.SCHEDULE, detail="nightly@2024"),
        pipeline_path="/pipelines/sales", **kwargs,
    )
    return run, [runs.StageRun(run_id=run_id, stage_id=s.id) for s in spec.stages]


def ordered_ids(n: int) -> list[str]:
    """Run ids in creation order (``new_id`` only orders ids made in different milliseconds)."""
    return sorted(runs.new_id() for _ in range(n))


async def new_run(store: base.Store, **kwargs: Any) -> runs.Run:
    run, stages = make_run(**kwargs)
    return await store.create_run(run, stages)


def path_to(target: states.State) -> list[Any]:
    """The shortest list of moves from the initial state to ``target`` (BFS over the rules)."""
    kind = type(target)
    start: states.State = next(iter(kind))  # type: ignore[assignment]
    queue: collections.deque[tuple[states.State, list[Any]]] = collections.deque([(start, [])])
    seen = {start}
    while queue:
        state, steps = queue.popleft()
        if state == target:
            return steps
        for nxt in kind:
            if nxt not in seen and states.allowed(state, nxt):
                seen.add(nxt)
                queue.append((nxt, [*steps, nxt]))
    raise AssertionError(f"{target} is unreachable")


# pipelines -------------------------------------------------------------------------------------
async def test_pipelines_round_trip_and_upsert(store: base.Store) -> None:
    spec = make_spec()
    first = runs.Pipeline(name="sales", spec=spec, path="/p/sales", spec_hash="abc")
    await store.upsert_pipeline(first)
    await store.upsert_pipeline(runs.Pipeline(name="alpha", spec=make_spec(stages=("one",))))
    assert await store.get_pipeline("sales") == first
    changed = dataclasses.replace(first, spec_hash="def", source="kubernetes", path=None)
    await store.upsert_pipeline(changed)
    assert await store.get_pipeline("sales") == changed
    assert [p.name for p in await store.list_pipelines()] == ["alpha", "sales"]
    await store.delete_pipeline("alpha")
    assert [p.name for p in await store.list_pipelines()] == ["sales"]


async def test_missing_pipeline_is_named(store: base.Store) -> None:
    with pytest.raises(errors.NotFoundError, match="pipeline 'nope' not found"):
        await store.get_pipeline("nope")
    with pytest.raises(errors.NotFoundError, match="pipeline 'nope' not found"):
        await store.delete_pipeline("nope")


# runs ------------------------------------------------------------------------------------------
async def test_create_run_round_trips_every_field(store: base.Store) -> None:
    run, stages = make_run(parent_run_id="p" * 22, schedule_id="nightly", route="left")
    assert await store.create_run(run, stages) == run
    assert await store.get_run(run.id) == run
    listed = await store.list_stage_runs(run.id)
    assert listed == stages
    [event] = await store.list_events(run.id)
    assert (event.entity, event.entity_id, event.from_state, event.to_state) == (
        "run", run.id, None, "queued")
    assert event.id > 0 and event.at.tzinfo is not None


async def test_create_run_refusals_write_nothing(store: base.Store) -> None:
    run, stages = make_run()
    with pytest.raises(errors.TransitionError, match="starts queued, not running"):
        await store.create_run(dataclasses.replace(run, state=R.RUNNING), stages)
    with pytest.raises(ValueError, match="belongs to run"):
        await store.create_run(run, [runs.StageRun(run_id="other", stage_id="x")])
    with pytest.raises(errors.NotFoundError):
        await store.get_run(run.id)
    await store.create_run(run, stages)
    with pytest.raises(errors.ConflictError, match="already exists"):
        await store.create_run(run, stages)
    assert len(await store.list_events(run.id)) == 1


async def test_missing_run_is_named(store: base.Store) -> None:
    for call in (store.get_run("r404"), store.request_cancel("r404"),
                 store.transition_run("r404", R.RUNNING), store.list_stage_runs("r404"),
                 store.list_events("r404")):
        with pytest.raises(errors.NotFoundError, match="run 'r404' not found"):
            await call


async def test_list_runs_filters_and_cursor_pagination(store: base.Store) -> None:
    made = [await new_run(store, pipeline="a" if i % 2 else "b", run_id=run_id)
            for i, run_id in enumerate(ordered_ids(7))]
    newest_first = [r.id for r in reversed(made)]
    assert [r.id for r in await store.list_runs()] == newest_first
    odd = {r.id for r in made[1::2]}
    assert [r.id for r in await store.list_runs(pipeline="a")] == [i for i in newest_first if i in odd]
    await store.transition_run(made[0].id, R.RUNNING)
    assert [r.id for r in await store.list_runs(states_in=[R.RUNNING])] == [made[0].id]
    assert await store.list_runs(states_in=[]) == []
    pages, cursor = [], None
    while True:
        page = await store.list_runs(limit=3, before=cursor)
        if not page:
            break
        pages.append([r.id for r in page])
        cursor = page[-1].id
    assert pages == [newest_first[:3], newest_first[3:6], newest_first[6:]]
    assert [r.id for r in await store.list_runs(pipeline="b", limit=2, before=made[6].id)] == [made[4].id, made[2].id]


async def test_every_run_move_follows_the_rules(store: base.Store) -> None:
    for current in R:
        for target in R:
            run = await new_run(store)
            for step in path_to(current):
                await store.transition_run(run.id, step, reason="setup")
            await _check_move(store, run.id, current, target,
                              move=lambda t=target, i=run.id: store.transition_run(i, t, reason="test"),
                              read=lambda i=run.id: store.get_run(i),
                              entity=("run", run.id))


async def test_every_stage_move_follows_the_rules(store: base.Store) -> None:
    for current in S:
        for target in S:
            run = await new_run(store)
            for step in path_to(current):
                await store.transition_stage(run.id, "fetch", step, reason="setup")

            async def read(i: str = run.id) -> runs.StageRun:
                return {s.stage_id: s for s in await store.list_stage_runs(i)}["fetch"]

            await _check_move(store, run.id, current, target,
                              move=lambda t=target, i=run.id: store.transition_stage(i, "fetch", t, reason="test"),
                              read=read, entity=("stage", "fetch"))
            assert (await store.list_stage_runs(run.id))[1].state is S.WAITING


async def test_every_attempt_move_follows_the_rules(store: base.Store) -> None:
    for current in A:
        for target in A:
            run = await new_run(store)
            attempt = await store.create_attempt(runs.Attempt(
                id=runs.new_id(), run_id=run.id, stage_id="fetch", number=1, executor="local"))
            for step in path_to(current):
                await store.transition_attempt(attempt.id, step, reason="setup")
            await _check_move(store, run.id, current, target,
                              move=lambda t=target, i=attempt.id: store.transition_attempt(i, t, reason="test"),
                              read=lambda i=attempt.id: store.get_attempt(i),
                              entity=("attempt", attempt.id))


async def _check_move(
    store: base.Store, run_id: str, current: states.State, target: states.State, *,
    move: Any, read: Any, entity: tuple[str, str],
) -> None:
    before, events_before = await read(), await store.list_events(run_id)
    assert before.state is current
    if not states.allowed(current, target):
        with pytest.raises(errors.TransitionError, match=f"cannot go from {current.value} to {target.value}"):
            await move()
        assert await read() == before, f"{current}->{target} changed the row"
        assert await store.list_events(run_id) == events_before
        return
    moved = await move()
    assert moved.state is target
    assert await read() == moved
    events = await store.list_events(run_id)
    assert len(events) == len(events_before) + 1
    last = events[-1]
    assert (last.entity, last.entity_id, last.from_state, last.to_state, last.reason) == (
        *entity, current.value, target.value, "test")
    assert await store.list_events(run_id, after=events_before[-1].id) == [last]
    if target.value == "running":
        assert moved.started_at is not None and moved.started_at == last.at
    if states.is_final(target):
        assert moved.finished_at is not None and moved.finished_at == last.at


async def test_transition_fields(store: base.Store) -> None:
    run = await new_run(store)
    started = dt.datetime(2024, 5, 1, 12, 0, 0, 123456, tzinfo=dt.UTC)
    moved = await store.transition_run(run.id, R.RUNNING, started_at=started)
    assert moved.started_at == started
    done = await store.transition_run(run.id, R.FAILED, reason="boom", error="stage fetch failed",
                                      outputs={"rows": 3})
    assert await store.get_run(run.id) == done
    assert (done.error, done.outputs, done.started_at) == ("stage fetch failed", {"rows": 3}, started)
    with pytest.raises(TypeError, match="cannot set state"):
        await store.transition_stage(run.id, "fetch", S.PENDING, state="running")
    with pytest.raises(TypeError, match="cannot set bogus"):
        await store.transition_run(run.id, R.SUCCEEDED, bogus=1)
    retry_at = dt.datetime(2030, 1, 1, tzinfo=dt.UTC)
    stage = await store.transition_stage(run.id, "load", S.PENDING, retry_at=retry_at, attempts=4)
    assert (stage.retry_at, stage.attempts) == (retry_at, 4)
    assert (await store.list_stage_runs(run.id))[1] == stage


async def test_returned_records_are_detached(store: base.Store) -> None:
    run = await new_run(store)
    got = await store.get_run(run.id)
    got.inputs["day"] = "mutated"
    assert (await store.get_run(run.id)).inputs["day"] == "2024-01-01"


async def test_request_cancel(store: base.Store) -> None:
    run = await new_run(store)
    flagged = await store.request_cancel(run.id)
    assert flagged.cancel_requested and flagged.state is R.QUEUED
    assert (await store.get_run(run.id)).cancel_requested
    assert (await store.request_cancel(run.id)) == flagged
    events = await store.list_events(run.id)
    assert [e.reason for e in events] == ["", "cancel requested"]
    await store.transition_run(run.id, R.CANCELLED)
    with pytest.raises(errors.ConflictError, match="already cancelled"):
        await store.request_cancel(run.id)


# claims ----------------------------------------------------------------------------------------
async def test_claim_oldest_first_with_limit(store: base.Store) -> None:
    made = [await new_run(store, pipeline=f"p{i}", run_id=run_id)
            for i, run_id in enumerate(ordered_ids(5))]
    claimed = await store.claim_queued_runs(limit=2)
    assert [r.id for r in claimed] == [made[0].id, made[1].id]
    assert all(r.state is R.RUNNING and r.started_at is not None for r in claimed)
    assert claimed[0] == await store.get_run(made[0].id)
    assert [(e.from_state, e.to_state, e.reason) for e in await store.list_events(made[0].id)][-1] == (
        "queued", "running", "claimed")
    assert [r.id for r in await store.claim_queued_runs(limit=10)] == [r.id for r in made[2:]]
    assert await store.claim_queued_runs(limit=10) == []
    assert await store.claim_queued_runs(limit=0) == []


async def test_claim_honours_max_instances(store: base.Store) -> None:
    ids = ordered_ids(7)
    capped = [await new_run(store, pipeline="capped", max_instances=2, run_id=i) for i in ids[:4]]
    free = [await new_run(store, pipeline="free", run_id=i) for i in ids[4:]]
    claimed = await store.claim_queued_runs(limit=10)
    assert [r.id for r in claimed] == [capped[0].id, capped[1].id, *[r.id for r in free]]
    assert await store.claim_queued_runs(limit=10) == []
    await store.transition_run(capped[0].id, R.SUCCEEDED)
    assert [r.id for r in await store.claim_queued_runs(limit=10)] == [capped[2].id]
    assert await store.claim_queued_runs(limit=10) == []


async def test_claim_only_given_runs(store: base.Store) -> None:
    made = [await new_run(store, run_id=i) for i in ordered_ids(3)]
    assert [r.id for r in await store.claim_queued_runs(limit=5, only=[made[2].id, "zzz"])] == [made[2].id]
    assert await store.claim_queued_runs(limit=5, only=[]) == []
    assert (await store.get_run(made[0].id)).state is R.QUEUED


# attempts --------------------------------------------------------------------------------------
async def test_attempts(store: base.Store) -> None:
    run = await new_run(store)
    t0 = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)
    first = runs.Attempt(id=runs.new_id(), run_id=run.id, stage_id="fetch", number=1,
                         executor="local", created_at=t0)
    assert await store.create_attempt(first) == first
    second = dataclasses.replace(first, id=runs.new_id(), number=2, created_at=t0 + dt.timedelta(seconds=1))
    await store.create_attempt(second)
    other = runs.Attempt(id=runs.new_id(), run_id=run.id, stage_id="load", number=1,
                         executor="docker", created_at=t0 + dt.timedelta(seconds=2))
    await store.create_attempt(other)
    assert (await store.list_stage_runs(run.id))[0].attempts == 2
    assert await store.get_attempt(first.id) == first
    assert await store.list_attempts(run.id) == [first, second, other]
    assert await store.list_attempts(run.id, stage_id="fetch") == [first, second]
    assert [e.to_state for e in await store.list_events(run.id) if e.entity == "attempt"] == ["pending"] * 3

    updated = await store.update_attempt(first.id, handle={"pid": 42, "pgid": 42})
    assert updated.handle == {"pid": 42, "pgid": 42} and updated.state is A.PENDING
    assert await store.get_attempt(first.id) == updated
    with pytest.raises(TypeError, match="cannot set state"):
        await store.update_attempt(first.id, state=A.RUNNING)

    await store.transition_attempt(first.id, A.RUNNING)
    failed = await store.transition_attempt(first.id, A.FAILED, failure=states.FailureKind.OOM,
                                            exit_code=137, error="out of memory")
    assert await store.get_attempt(first.id) == failed
    assert failed.failure is states.FailureKind.OOM and failed.exit_code == 137
    assert {a.id for a in await store.list_live_attempts()} == {second.id, other.id}


async def test_attempt_refusals(store: base.Store) -> None:
    run = await new_run(store)
    attempt = runs.Attempt(id=runs.new_id(), run_id=run.id, stage_id="fetch", number=1, executor="local")
    with pytest.raises(errors.TransitionError, match="starts pending"):
        await store.create_attempt(dataclasses.replace(attempt, state=A.RUNNING))
    with pytest.raises(errors.NotFoundError, match="stage 'nope' not found in run"):
        await store.create_attempt(dataclasses.replace(attempt, stage_id="nope"))
    with pytest.raises(errors.NotFoundError, match="run 'r404' not found"):
        await store.create_attempt(dataclasses.replace(attempt, run_id="r404"))
    await store.create_attempt(attempt)
    with pytest.raises(errors.ConflictError, match="already exists"):
        await store.create_attempt(dataclasses.replace(attempt, id=runs.new_id()))
    with pytest.raises(errors.ConflictError, match="already exists"):
        await store.create_attempt(attempt)
    assert (await store.list_stage_runs(run.id))[0].attempts == 1
    for call in (store.get_attempt("a404"), store.update_attempt("a404", error="x"),
                 store.transition_attempt("a404", A.RUNNING)):
        with pytest.raises(errors.NotFoundError, match="attempt 'a404' not found"):
            await call
    with pytest.raises(errors.NotFoundError, match="stage 'nope' not found in run"):
        await store.transition_stage(run.id, "nope", S.PENDING)


# secrets ---------------------------------------------------------------------------------------
async def test_secrets(store: base.Store) -> None:
    await store.put_secret("DB_PASSWORD", b"cipher-1")
    await store.put_secret("API_KEY", b"cipher-2")
    first = await store.get_secret("DB_PASSWORD")
    assert first.ciphertext == b"cipher-1" and first.name == "DB_PASSWORD"
    await store.put_secret("DB_PASSWORD", b"cipher-3")
    again = await store.get_secret("DB_PASSWORD")
    assert again.ciphertext == b"cipher-3"
    assert again.created_at == first.created_at and again.updated_at >= first.updated_at
    assert await store.list_secrets() == ["API_KEY", "DB_PASSWORD"]
    await store.delete_secret("API_KEY")
    assert await store.list_secrets() == ["DB_PASSWORD"]
    for call in (store.get_secret("API_KEY"), store.delete_secret("API_KEY")):
        with pytest.raises(errors.NotFoundError, match=r"secret 'API_KEY' not found .*kubeline secrets set API_KEY"):
            await call


async def test_apply_is_all_or_nothing(store: base.Store) -> None:
    run = await new_run(store)
    await store.transition_run(run.id, states.RunState.RUNNING)
    attempt = runs.Attempt(id=runs.new_id(), run_id=run.id, stage_id="fetch", number=1, executor="local")
    done = await store.apply([
        base.StageMove(run_id=run.id, stage_id="fetch", to=states.StageState.PENDING, reason="ready"),
        base.NewAttempt(attempt=attempt),
    ])
    assert [type(d).__name__ for d in done] == ["StageRun", "Attempt"]
    events_before = await store.list_events(run.id)
    with pytest.raises(errors.TransitionError):
        await store.apply([
            base.AttemptMove(attempt_id=attempt.id, to=states.AttemptState.RUNNING, fields={"handle": {"pid": 1}}),
            base.StageMove(run_id=run.id, stage_id="fetch", to=states.StageState.SUCCEEDED),  # pending -> succeeded: refused
        ])
    assert (await store.get_attempt(attempt.id)).state is states.AttemptState.PENDING
    assert (await store.get_attempt(attempt.id)).handle == {}
    assert await store.list_events(run.id) == events_before
    stage = {s.stage_id: s for s in await store.list_stage_runs(run.id)}["fetch"]
    assert stage.state is states.StageState.PENDING and stage.attempts == 1


async def test_apply_ends_the_run_with_its_last_stage_all_or_nothing(store: base.Store) -> None:
    run = await new_run(store)
    await store.transition_run(run.id, states.RunState.RUNNING)
    S = states.StageState
    child, child_stages = make_run(pipeline="child")
    ending = [base.StageMove(run_id=run.id, stage_id="fetch", to=S.SKIPPED, reason="not needed"),
              base.StageMove(run_id=run.id, stage_id="load", to=S.SKIPPED, reason="not needed"),
              base.RunMove(run_id=run.id, to=states.RunState.SUCCEEDED, reason="all stages succeeded",
                           fields={"outputs": {"n": 1}}, spawn=[base.NewRun(run=child, stages=child_stages)])]
    await store.create_run(child, child_stages)  # the spawned run's id is taken: the whole batch fails
    events_before = await store.list_events(run.id)
    with pytest.raises(errors.ConflictError, match=child.id):
        await store.apply(ending)
    assert [s.state for s in await store.list_stage_runs(run.id)] == [S.WAITING, S.WAITING]
    assert (await store.get_run(run.id)).state is states.RunState.RUNNING
    assert await store.list_events(run.id) == events_before
    child, child_stages = make_run(pipeline="child")
    done = await store.apply([*ending[:2], dataclasses.replace(
        ending[2], spawn=[base.NewRun(run=child, stages=child_stages)])])
    assert [type(d).__name__ for d in done] == ["StageRun", "StageRun", "Run"]
    ended = await store.get_run(run.id)
    assert done[2] == ended and (ended.state, ended.outputs) == (states.RunState.SUCCEEDED, {"n": 1})
    assert (await store.get_run(child.id)).state is states.RunState.QUEUED
    with pytest.raises(errors.TransitionError):  # a final run does not move again
        await store.apply([base.RunMove(run_id=run.id, to=states.RunState.FAILED)])


async def test_nul_bytes_are_bad_input_not_a_crash(store: base.Store) -> None:
    # PostgreSQL cannot store NUL in text: every backend answers with bad input or not-found, never a crash
    with pytest.raises((errors.InvalidInputError, errors.NotFoundError)):
        await store.get_pipeline("bad\x00name")
