"""Through the composition root: small python stages run on local-warm without asking, the rest
(and stages that name `local`) on local; outputs flow between them either way."""

from __future__ import annotations

import asyncio
import contextlib
import pathlib
import textwrap

from kubeline import bootstrap, settings
from kubeline.domain import errors, states
from kubeline.pipelines import loader
from kubeline.storage import base as storage


async def test_the_engine_picks_local_warm_for_small_python_stages(tmp_path):
    folder = tmp_path / "mixed"
    folder.mkdir()
    (folder / "main.py").write_text(textwrap.dedent("""
        from kubeline import task
        task.set_output("n", task.input("n", default=0) + 1)
    """))
    (folder / "pipeline.yaml").write_text(textwrap.dedent("""
        stages:
          - {id: warm, type: python, file: main.py}
          - {id: cold, type: python, file: main.py, executor: local, dependsOn: [warm],
             inputs: {n: "${stages.warm.outputs.n}"}}
          - {id: sh, type: shell, command: "echo from shell", dependsOn: [cold]}
    """))
    config = settings.Settings(home=tmp_path / "home")
    async with bootstrap.open_kubeline(config) as kl:
        pipeline = loader.load_folder(folder)
        await kl.store.upsert_pipeline(pipeline)
        run = await kl.engine.execute((await kl.engine.submit(pipeline)).id)
        assert run.state is states.RunState.SUCCEEDED, run.error
        attempts = {a.stage_id: a for a in await kl.store.list_attempts(run.id)}
        assert {k: a.executor for k, a in attempts.items()} == {
            "warm": "local-warm", "cold": "local", "sh": "local"}
        assert "warm_worker" in attempts["warm"].handle and "warm_worker" not in attempts["cold"].handle
        assert attempts["cold"].outputs == {"n": 2}
        log = [line.text for line in kl.logs.read(run.id, stage_id="sh")]
        assert "from shell" in log


async def test_quick_stages_start_before_they_end(tmp_path):
    """A stage that ends before its start is recorded (one transaction for both) still has a
    start at or before its end: the end is the real one (its exit), the start not the later
    transaction's time. The attempts and stages of a chain of 12 quick stages all hold it."""
    folder = tmp_path / "chain"
    folder.mkdir()
    (folder / "main.py").write_text("pass\n")
    stages = "\n".join(f"  - {{id: s{i}, type: python, file: main.py"
                       + (f", dependsOn: [s{i - 1}]}}" if i else "}") for i in range(12))
    (folder / "pipeline.yaml").write_text(f"executor: local-warm\nstages:\n{stages}\n")
    async with bootstrap.open_kubeline(settings.Settings(home=tmp_path / "home")) as kl:
        pipeline = loader.load_folder(folder)
        await kl.store.upsert_pipeline(pipeline)
        run = await kl.engine.execute((await kl.engine.submit(pipeline)).id)
        assert run.state is states.RunState.SUCCEEDED, run.error
        timed = [*await kl.store.list_attempts(run.id), *await kl.store.list_stage_runs(run.id)]
    assert len(timed) == 24
    assert [(t.started_at, t.finished_at) for t in timed
            if not (t.started_at and t.finished_at and t.started_at <= t.finished_at)] == []
    assert run.started_at is not None and run.finished_at is not None and run.started_at <= run.finished_at


async def test_a_held_start_whose_record_fails_runs_nothing(tmp_path):
    """The next stage of a chain is made ready on a spare while the end of the one before and its
    own attempt are recorded; that write failing (here: the lease was lost, as the store says
    when another replica adopted the run) lets go of it: its script never runs and its work dir
    is gone. The stage before ran once; the run is left to whoever owns it now."""
    folder = tmp_path / "chain"
    folder.mkdir()
    (folder / "main.py").write_text(textwrap.dedent(f"""
        import os, pathlib
        marks = pathlib.Path({str(tmp_path / "marks")!r})
        marks.mkdir(exist_ok=True)
        (marks / os.environ["KUBELINE_STAGE"]).write_text("ran")
    """))
    (folder / "pipeline.yaml").write_text("executor: local-warm\nstages:\n"
                                          "  - {id: s0, type: python, file: main.py}\n"
                                          "  - {id: s1, type: python, file: main.py, dependsOn: [s0]}\n")
    held = []
    async with bootstrap.open_kubeline(settings.Settings(home=tmp_path / "home")) as kl:
        executor = kl.executors["local-warm"]
        start_held = executor.start_held

        async def recording_start_held(spec, sink):
            found = await start_held(spec, sink)
            if found is not None:
                held.append((spec.stage_id, found))
            return found

        executor.start_held = recording_start_held
        apply = kl.store.apply

        async def failing_apply(moves, **kwargs):
            if any(isinstance(m, storage.NewAttempt) and m.attempt.stage_id == "s1" for m in moves):
                raise errors.LeaseLostError("the run's lease is held by another replica now")
            return await apply(moves, **kwargs)

        kl.store.apply = failing_apply
        pipeline = loader.load_folder(folder)
        await kl.store.upsert_pipeline(pipeline)
        for _ in range(3):  # the first run warms the pool: a spare is offered for the next ones
            run = await kl.engine.submit(pipeline)
            with contextlib.suppress(errors.LeaseLostError):
                await kl.engine.execute(run.id)
            if held:
                break
        assert [stage for stage, _ in held] == ["s1"]
        ready = held[0][1]
        for _ in range(500):
            if not pathlib.Path(f"/proc/{ready.handle['pid']}").exists():
                break
            await asyncio.sleep(0.01)
        assert not pathlib.Path(f"/proc/{ready.handle['pid']}").exists()
        assert not pathlib.Path(ready.handle["work_dir"]).exists()
        assert sorted(p.name for p in (tmp_path / "marks").iterdir()) == ["s0"]
        assert [a.stage_id for a in await kl.store.list_attempts(run.id)] == ["s0"]
