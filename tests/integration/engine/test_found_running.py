"""A server that died after starting an attempt but before storing its handle: the next one
finds the attempt by its work dir and adopts it (never starts it again), says so in its log,
and keeps its real times although it ended before the adoption."""

from __future__ import annotations

import pathlib

from kubeline import bootstrap, settings
from kubeline.domain import states
from kubeline.engine import planner
from kubeline.pipelines import loader


async def test_an_attempt_started_but_never_recorded_as_running_is_adopted(tmp_path: pathlib.Path) -> None:
    folder = tmp_path / "quick"
    folder.mkdir()
    (folder / "pipeline.yaml").write_text("stages:\n  - {id: work, type: shell, command: 'echo begin; echo end'}\n")
    config = settings.Settings(home=tmp_path / "home", replica_id="replica-a")
    async with bootstrap.open_kubeline(config, replica=True) as kl:
        pipeline = loader.load_folder(folder)
        await kl.store.upsert_pipeline(pipeline)
        run_id = (await kl.engine.submit(pipeline)).id
        [(claimed, [planned])] = await kl.engine._claim(limit=1)  # the attempt recorded, not started
        run = claimed.run
        spec = planner.build(run=run, stage=planner.stage_of(run, "work"), attempt=planned.attempt,
                             settings=planned.eff, outputs={}, secret_values={})
        executor = kl.executors[planned.attempt.executor]
        sink = kl.logs.sink(run_id=run_id, stage_id="work", attempt=1, secrets=())
        handle = await executor.start(spec, sink)
        assert (await executor.wait(handle)).succeeded  # ended; the server "dies" before storing anything
        [pending] = await kl.store.list_attempts(run_id)
        assert pending.state is states.AttemptState.PENDING and not pending.handle
    async with bootstrap.open_kubeline(config, replica=True) as kl:  # the same replica, restarted: reclaims at once
        [final] = await kl.engine.resume()
        [attempt] = await kl.store.list_attempts(run_id)
        [stage] = await kl.store.list_stage_runs(run_id)
        log = [line.text for line in kl.logs.read(run_id, stage_id="work")]
    assert final.state is states.RunState.SUCCEEDED, final.error
    assert attempt.number == 1 and attempt.handle["attempt_id"] == attempt.id  # adopted, not started again
    assert "attempt 1 adopted after a restart" in log and log.count("begin") == 1
    for timed in (attempt, stage):  # it started when recorded, not at the adoption after its end
        assert timed.started_at is not None and timed.finished_at is not None
        assert timed.started_at <= timed.finished_at, (timed.started_at, timed.finished_at)
    assert attempt.started_at == attempt.created_at
