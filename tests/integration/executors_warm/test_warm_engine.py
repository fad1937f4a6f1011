"""Through the composition root: small python stages run on local-warm without asking, the rest
(and stages that name `local`) on local; outputs flow between them either way."""

from __future__ import annotations

import textwrap

from kubeline import bootstrap, settings
from kubeline.domain import states
from kubeline.pipelines import loader


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
