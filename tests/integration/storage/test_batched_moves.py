"""State moves by group commit (``storage.sql.batches``), on SQLite and PostgreSQL: the writes of
many runs that arrive together go in one transaction of a few statements, each caller gets its own
records, and a group that cannot be applied (a lost lease, a move the rules refuse, a duplicate
id) fails alone, with its own error, writing nothing, while the others in its batch commit."""

from __future__ import annotations

import asyncio
import datetime as dt
import re
from typing import Any

import sqlalchemy as sa

from kubeline.domain import errors, runs, specs, states
from kubeline.storage import base
from kubeline.storage.sql import tables

S, A, R = states.StageState, states.AttemptState, states.RunState
SPEC = specs.PipelineSpec.model_validate({"stages": [{"id": "only", "type": "shell", "command": "x"}]})


# The read of a batch's fences: the runs' own on PostgreSQL, with their stages on SQLite
_BATCH_LOCK = re.compile(r"^\s*SELECT runs\.id, runs\.owner, runs\.lease_generation\s+FROM runs"
                         r"|^\s*SELECT stage_runs\..* AS fence_generation\s+FROM stage_runs JOIN runs", re.S)


async def running_run(store: Any, *, expired: bool = False) -> tuple[runs.Run, base.Fence]:
    """A claimed one-stage run; its fence is the claim's lease generation."""
    run = runs.Run(id=runs.new_id(), pipeline="p", spec=SPEC)
    await store.create_run(run, [runs.StageRun(run_id=run.id, stage_id="only")])
    until = runs.utcnow() - dt.timedelta(seconds=1) if expired else runs.utcnow() + dt.timedelta(hours=1)
    [claimed] = await store.claim_runs(limit=1, only=[run.id], lease=base.Lease(owner="me", until=until))
    return claimed.run, base.Fence(run_id=run.id, generation=claimed.run.lease_generation)


def start(run: runs.Run) -> tuple[runs.Attempt, list[base.Move]]:
    attempt = runs.Attempt(id=runs.new_id(), run_id=run.id, stage_id="only", number=1, executor="local")
    return attempt, [base.StageMove(run_id=run.id, stage_id="only", to=S.PENDING),
                     base.NewAttempt(attempt=attempt)]


def finish(run: runs.Run, attempt: runs.Attempt) -> list[base.Move]:
    return [base.AttemptMove(attempt_id=attempt.id, to=A.RUNNING, fields={"handle": {"pid": 1}}),
            base.StageMove(run_id=run.id, stage_id="only", to=S.RUNNING),
            base.AttemptMove(attempt_id=attempt.id, to=A.SUCCEEDED, fields={"exit_code": 0, "outputs": {"n": 1}}),
            base.StageMove(run_id=run.id, stage_id="only", to=S.SUCCEEDED, fields={"outputs": {"n": 1}}),
            base.RunMove(run_id=run.id, to=R.SUCCEEDED, fields={"outputs": {"only": {"n": 1}}})]


async def test_the_moves_of_many_runs_share_one_transaction(store: Any, statements: Any) -> None:
    leased = [await running_run(store) for _ in range(12)]
    started = [start(run) for run, _ in leased]
    statements.clear()
    records = await asyncio.gather(*(store.apply(moves, fence=fence)
                                     for (_, fence), (_, moves) in zip(leased, started, strict=True)))
    assert statements.count(_BATCH_LOCK) == 1  # one batch for the twelve callers
    for (run, _), (attempt, _), done in zip(leased, started, records, strict=True):
        stage, new = done
        assert (stage.run_id, stage.state, new) == (run.id, S.PENDING, attempt)
    statements.clear()
    ended = await asyncio.gather(*(store.apply(finish(run, attempt), fence=fence)
                                   for (run, fence), (attempt, _) in zip(leased, started, strict=True)))
    assert statements.count(_BATCH_LOCK) == 1
    for (run, _), done in zip(leased, ended, strict=True):
        assert [getattr(r, "state", None) for r in done] == [A.RUNNING, S.RUNNING, A.SUCCEEDED, S.SUCCEEDED,
                                                             R.SUCCEEDED]
        assert done[0].handle == {"pid": 1} and done[0].exit_code is None  # each record as its move left it
        assert done[2].outputs == {"n": 1} and done[2].started_at is not None
        final = await store.get_run(run.id)
        assert (final.state, final.outputs) == (R.SUCCEEDED, {"only": {"n": 1}})
        [stored] = await store.list_attempts(run.id)
        assert (stored.state, stored.handle, stored.exit_code) == (A.SUCCEEDED, {"pid": 1}, 0)
        [stage] = await store.list_stage_runs(run.id)
        assert (stage.state, stage.attempts, stage.outputs) == (S.SUCCEEDED, 1, {"n": 1})
        moved = [(e.entity, e.from_state, e.to_state) for e in await store.list_events(run.id)]
        assert moved == [("run", None, "queued"), ("run", "queued", "running"), ("stage", "waiting", "pending"),
                         ("attempt", None, "pending"), ("attempt", "pending", "running"),
                         ("stage", "pending", "running"), ("attempt", "running", "succeeded"),
                         ("stage", "running", "succeeded"), ("run", "running", "succeeded")]


async def test_a_fenced_group_fails_alone_inside_its_batch(store: Any, statements: Any) -> None:
    (kept, kept_fence), (lost, lost_fence) = await running_run(store), await running_run(store, expired=True)
    adopted = await store.adopt_runs(base.Lease(owner="heir", until=runs.utcnow() + dt.timedelta(hours=1)),
                                     limit=1, only=[lost.id])
    assert [r.lease_generation for r in adopted] == [lost_fence.generation + 1]
    (_, kept_moves), (_, lost_moves) = start(kept), start(lost)
    statements.clear()
    done, refused = await asyncio.gather(store.apply(kept_moves, fence=kept_fence),
                                         store.apply(lost_moves, fence=lost_fence), return_exceptions=True)
    assert statements.count(_BATCH_LOCK) == 1
    assert isinstance(refused, errors.LeaseLostError)
    assert (refused.run_id, refused.generation, refused.current, refused.owner) == (
        lost.id, lost_fence.generation, lost_fence.generation + 1, "heir")
    assert not isinstance(done, BaseException) and done[0].state is S.PENDING
    assert await store.list_attempts(lost.id) == []  # nothing of the fenced group was written
    [stage] = await store.list_stage_runs(lost.id)
    assert (stage.state, stage.attempts) == (S.WAITING, 0)
    assert [e.entity for e in await store.list_events(lost.id)] == ["run", "run"]
    assert len(await store.list_attempts(kept.id)) == 1


async def test_a_group_the_rules_refuse_fails_alone_and_writes_nothing(store: Any, statements: Any) -> None:
    (good, fence), (bad, bad_fence) = await running_run(store), await running_run(store)
    (attempt, good_moves), (bad_attempt, bad_moves) = start(good), start(bad)
    await store.apply(bad_moves, fence=bad_fence)
    events_before = await store.list_events(bad.id)
    # the attempt may start, but a pending stage cannot succeed: the whole group is refused
    refused_moves: list[base.Move] = [
        base.AttemptMove(attempt_id=bad_attempt.id, to=A.RUNNING),
        base.StageMove(run_id=bad.id, stage_id="only", to=S.SUCCEEDED)]
    statements.clear()
    done, refused = await asyncio.gather(store.apply(good_moves, fence=fence),
                                         store.apply(refused_moves, fence=bad_fence), return_exceptions=True)
    assert statements.count(_BATCH_LOCK) == 1
    assert isinstance(refused, errors.TransitionError)
    assert "cannot go from pending to succeeded" in str(refused)
    assert not isinstance(done, BaseException) and done[1] == attempt
    [stored] = await store.list_attempts(bad.id)
    assert stored.state is A.PENDING  # its first move, allowed, was not written either
    assert await store.list_events(bad.id) == events_before
    [stage] = await store.list_stage_runs(good.id)
    assert (stage.state, stage.attempts) == (S.PENDING, 1)


async def test_a_group_the_database_refuses_fails_alone(store: Any) -> None:
    (first, fence), (second, second_fence) = await running_run(store), await running_run(store)
    (attempt, moves), (_, other_moves) = start(first), start(second)
    await store.apply(moves, fence=fence)
    again = runs.Attempt(id=attempt.id, run_id=first.id, stage_id="only", number=2, executor="local")
    done, refused = await asyncio.gather(store.apply(other_moves, fence=second_fence),
                                         store.apply([base.NewAttempt(attempt=again)], fence=fence),
                                         return_exceptions=True)
    assert isinstance(refused, errors.ConflictError) and attempt.id in str(refused)
    assert not isinstance(done, BaseException) and done[0].state is S.PENDING
    assert len(await store.list_attempts(second.id)) == 1
    [stage] = await store.list_stage_runs(first.id)
    assert stage.attempts == 1


async def test_missing_rows_are_named_per_group(store: Any) -> None:
    run, fence = await running_run(store)
    missing_stage = store.apply([base.StageMove(run_id=run.id, stage_id="nope", to=S.PENDING)], fence=fence)
    missing_run = store.apply([base.RunMove(run_id="no-such-run", to=R.FAILED)])
    missing_attempt = store.apply([base.AttemptMove(attempt_id="no-such-attempt", to=A.RUNNING)])
    found = await asyncio.gather(missing_stage, missing_run, missing_attempt, return_exceptions=True)
    assert all(isinstance(e, errors.NotFoundError) for e in found)
    assert ["'nope'" in str(found[0]), "no-such-run" in str(found[1]), "no-such-attempt" in str(found[2])] == [
        True, True, True]
    counted = await store.database.run(
        lambda conn: conn.execute(sa.select(sa.func.count()).select_from(tables.events)
                                  .where(tables.events.c.run_id == run.id)).scalar_one(), write=False)
    assert counted == 2  # queued, claimed: nothing else


async def test_a_batch_reads_the_same_rows_whatever_how_many_keys_it_binds(store: Any) -> None:
    """Up to ``_BOUND_KEYS`` keys a batch's locking reads bind each key; past it, one expanding
    parameter: both find every row asked for (and only those), missing keys simply absent."""
    from kubeline.storage.sql import batches

    made = [await running_run(store) for _ in range(batches._BOUND_KEYS + 2)]
    ids = [run.id for run, _ in made]

    def read(count: int) -> Any:
        def go(conn: sa.Connection) -> tuple[set[str], set[tuple[str, str]]]:
            asked = sorted([*ids[:count], "no-such-run"])
            runs_ = {row["id"] for row in batches._keyed(conn, batches._LOCK_RUNS, batches._RUN_KEY,
                                                        asked)}
            stages = {(row["run_id"], row["stage_id"]) for row in batches._keyed(
                conn, batches._LOCK_STAGES, batches._STAGE_KEY, sorted((key, "only") for key in asked))}
            return runs_, stages
        return store.database.run(go, write=True)

    for count in (1, batches._BOUND_KEYS - 1, batches._BOUND_KEYS + 1):  # bound, bound, expanding
        found_runs, found_stages = await read(count)
        assert found_runs == set(ids[:count])
        assert found_stages == {(key, "only") for key in ids[:count]}


async def test_a_fence_without_a_stage_move_is_still_checked(store: Any) -> None:
    """A group that moves only an attempt has no stage row to bring its run's fence along (on
    SQLite the fences come with the stages): its run is read on its own, and a lost lease refused."""
    run, fence = await running_run(store, expired=True)
    attempt, moves = start(run)
    await store.apply(moves, fence=fence)
    await store.adopt_runs(base.Lease(owner="heir", until=runs.utcnow() + dt.timedelta(hours=1)),
                           limit=1, only=[run.id])
    refused = await asyncio.gather(store.apply([base.AttemptMove(attempt_id=attempt.id, to=A.RUNNING)],
                                               fence=fence), return_exceptions=True)
    assert isinstance(refused[0], errors.LeaseLostError)
    [kept] = await store.list_attempts(run.id)
    assert kept.state is A.PENDING


async def test_a_first_caller_cancelled_while_others_queue_still_writes_them_all(store: Any, statements: Any) -> None:
    """The first caller lets the loop turn before it writes (the others of that turn queue
    behind it); cancelled then, its group is still written (as a transaction's) and so are the
    others', together; it then raises CancelledError."""
    leased = [await running_run(store) for _ in range(4)]
    started = [start(run) for run, _ in leased]
    statements.clear()
    calls = [asyncio.ensure_future(store.apply(moves, fence=fence))
             for (_, fence), (_, moves) in zip(leased, started, strict=True)]
    await asyncio.sleep(0)  # each call has queued its group; the first lets the loop turn
    calls[0].cancel()
    done = await asyncio.gather(*calls, return_exceptions=True)
    assert isinstance(done[0], asyncio.CancelledError)
    assert [record[1] for record in done[1:]] == [attempt for attempt, _ in started[1:]]
    assert statements.count(_BATCH_LOCK) == 1
    for run, _ in leased:
        [stage] = await store.list_stage_runs(run.id)
        assert stage.state is S.PENDING
