"""Durable downstream triggers: a process killed (SIGKILL) right after its run ended loses nothing.

A real child process drives a run whose pipeline has a downstream pipeline, and kills itself with
SIGKILL the moment the store returns from the transaction that ended the run (the worst moment
for the old code, which submitted the downstream run only afterwards). The downstream run must
be in the database, queued, linked to its parent, and another engine then runs it.
"""

from __future__ import annotations

import asyncio
import os
import pathlib
import signal
import subprocess
import sys
import textwrap

from kubeline.domain import runs, states
from kubeline.engine import engine as engine_
from kubeline.logs import store as log_store
from kubeline.storage.sql import SqlStore
from kubeline.testing import executors as fake

CHILD = textwrap.dedent("""
    import asyncio, os, signal, sys
    from kubeline.domain import runs, specs, states
    from kubeline.engine import engine as engine_
    from kubeline.logs import store as log_store
    from kubeline.storage import base
    from kubeline.storage.sql import SqlStore
    from kubeline.testing import executors as fake

    class Secrets:
        async def resolve(self, names): return {}
        def decrypt_env(self, env): return {}

    class DiesAfterTheEnd(SqlStore):
        async def transition_run(self, run_id, to, **kw):
            run = await super().transition_run(run_id, to, **kw)
            if states.is_final(to):
                os.kill(os.getpid(), signal.SIGKILL)  # committed; nothing after this runs
            return run

        async def apply(self, moves, **kw):  # the last stage's end ends the run in its transaction
            done = await super().apply(moves, **kw)
            if any(isinstance(m, base.RunMove) and states.is_final(m.to) for m in moves):
                os.kill(os.getpid(), signal.SIGKILL)
            return done

    async def main(url, logs):
        plain = await SqlStore.open(url)
        store = DiesAfterTheEnd(plain.database)
        spec = lambda extra: specs.PipelineSpec.model_validate(
            {**extra, "stages": [{"id": "a", "type": "shell", "command": "x"}]})
        await store.upsert_pipeline(runs.Pipeline(name="report", spec=spec({}), source="api"))
        parent = runs.Pipeline(name="load", spec=spec({"downstream": [{"pipeline": "report", "on": "success"}]}),
                               source="api")
        await store.upsert_pipeline(parent)
        engine = engine_.Engine(store=store, executors={"local": fake.FakeExecutor()},
                                logs=log_store.LogStore(logs), secrets=Secrets())
        run = await engine.submit(parent)
        print(run.id, flush=True)
        await engine.execute(run.id)

    asyncio.run(main(sys.argv[1], sys.argv[2]))
""")


class _Secrets:
    async def resolve(self, names: list[str]) -> dict[str, str]:
        return {}

    def decrypt_env(self, encrypted_env: dict[str, str]) -> dict[str, str]:
        return {}


async def test_kill_9_right_after_a_run_ended_keeps_its_downstream_run(
    database_url: str, tmp_path: pathlib.Path
) -> None:
    done = await asyncio.to_thread(
        subprocess.run, [sys.executable, "-c", CHILD, database_url, str(tmp_path / "logs")],
        capture_output=True, text=True, timeout=120, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    assert done.returncode == -signal.SIGKILL, done.stderr[-2000:]
    parent_id = done.stdout.split()[0]
    store = await SqlStore.open(database_url)
    try:
        parent = await store.get_run(parent_id)
        assert parent.state is states.RunState.SUCCEEDED
        [child] = await store.list_runs(pipeline="report")
        assert child.parent_run_id == parent_id and child.state is states.RunState.QUEUED
        assert child.triggered_by.kind is runs.TriggerKind.DOWNSTREAM
        engine = engine_.Engine(store=store, executors={"local": fake.FakeExecutor()},
                                logs=log_store.LogStore(tmp_path / "logs2"), secrets=_Secrets())
        assert (await asyncio.wait_for(engine.execute(child.id), 60)).state is states.RunState.SUCCEEDED
        await engine.shutdown()
    finally:
        await store.close()

