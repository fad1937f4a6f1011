"""Engine logic on the SQL store (a temporary SQLite file) and the fake executor: no processes."""

from __future__ import annotations

import asyncio
import pathlib
from typing import Any

import pytest

from kubeline.domain import errors, runs, specs, states
from kubeline.engine import engine as engine_
from kubeline.logs import store as log_store
from kubeline.storage.sql import store as sql_store_
from kubeline.testing import executors as fake

S = states.StageState


class Secrets:
    def __init__(self, values: dict[str, str] | None = None) -> None:
        self.values = values or {}

    async def resolve(self, names: list[str]) -> dict[str, str]:
        missing = [n for n in names if n not in self.values]
        if missing:
            raise errors.NotFoundError(f"secret {missing[0]!r} does not exist")
        return {n: self.values[n] for n in names}

    def decrypt_env(self, encrypted_env: dict[str, str]) -> dict[str, str]:
        return {k: v.removeprefix("enc:") for k, v in encrypted_env.items()}


def pipeline(spec: dict[str, Any], name: str = "p") -> runs.Pipeline:
    return runs.Pipeline(name=name, spec=specs.PipelineSpec.model_validate(spec), source="api")


@pytest.fixture
def make_engine(tmp_path: pathlib.Path, sql_store: sql_store_.SqlStore):  # type: ignore[no-untyped-def]
    def _make(outcomes: dict[str, Any], secrets: dict[str, str] | None = None) -> tuple[engine_.Engine, fake.FakeExecutor]:
        executor = fake.FakeExecutor(outcomes)
        engine = engine_.Engine(store=sql_store, executors={"local": executor},
                                logs=log_store.LogStore(tmp_path / "logs"), secrets=Secrets(secrets),
                                poll_interval=0.05)
        return engine, executor

    return _make


CHAIN = {"stages": [{"id": "a", "type": "shell", "command": "x"},
                    {"id": "b", "type": "shell", "command": "x", "dependsOn": ["a"],
                     "inputs": {"v": "${stages.a.outputs.v}"}}]}


async def test_outputs_flow_to_dependants(make_engine):
    engine, executor = make_engine({"a": fake.Outcome(outputs={"v": 41})})
    run = await engine.submit(pipeline(CHAIN))
    final = await engine.execute(run.id)
    assert final.state is states.RunState.SUCCEEDED
    assert [s.stage_id for s in executor.started] == ["a", "b"]
    assert executor.started[1].inputs == {"v": 41}


async def test_start_error_fails_without_retry(make_engine):
    engine, _ = make_engine({"a": fake.Outcome(start_error="image not found")})
    spec = {**CHAIN, "retries": {"attempts": 3, "delay": 0}}
    final = await engine.execute((await engine.submit(pipeline(spec))).id)
    assert final.state is states.RunState.FAILED and "image not found" in final.error
    stages = {s.stage_id: s.state for s in await engine.store.list_stage_runs(final.id)}
    assert stages == {"a": S.FAILED, "b": S.SKIPPED}


async def test_retries_exhausted_then_failed(make_engine):
    engine, executor = make_engine({"a": fake.Outcome(exit_code=2)})
    spec = {**CHAIN, "retries": {"attempts": 2, "strategy": "custom", "delays": [0.01, 0.02]}}
    final = await engine.execute((await engine.submit(pipeline(spec))).id)
    assert final.state is states.RunState.FAILED
    assert len([s for s in executor.started if s.stage_id == "a"]) == 3
    attempts = await engine.store.list_attempts(final.id, stage_id="a")
    assert [a.number for a in attempts] == [1, 2, 3]


async def test_timeouts_are_not_retried_unless_asked(make_engine):
    engine, executor = make_engine({"a": fake.Outcome(hang=True)})
    spec = {**CHAIN, "timeout": 0.05, "retries": {"attempts": 2, "delay": 0, "on": ["failed"]}}
    final = await engine.execute((await engine.submit(pipeline(spec))).id)
    assert final.state is states.RunState.TIMED_OUT
    assert len(executor.started) == 1


async def test_parallelism_limits_concurrent_stages(make_engine):
    engine, executor = make_engine({k: fake.Outcome(duration=0.05) for k in "abcd"})
    spec = {"parallelism": 2, "stages": [{"id": k, "type": "shell", "command": "x"} for k in "abcd"]}
    run = await engine.submit(pipeline(spec))
    peak = 0

    async def watch() -> None:
        nonlocal peak
        while True:
            peak = max(peak, len(executor.running))
            await asyncio.sleep(0.005)

    watcher = asyncio.create_task(watch())
    final = await engine.execute(run.id)
    watcher.cancel()
    assert final.state is states.RunState.SUCCEEDED
    assert peak == 2


async def test_cancel_stops_running_and_pending_stages(make_engine):
    engine, executor = make_engine({"a": fake.Outcome(hang=True)})
    run = await engine.submit(pipeline(CHAIN))
    driving = asyncio.create_task(engine.execute(run.id))
    while not executor.running:
        await asyncio.sleep(0.01)
    await engine.cancel(run.id)
    final = await asyncio.wait_for(driving, 5)
    assert final.state is states.RunState.CANCELLED
    stages = {s.stage_id: s.state for s in await engine.store.list_stage_runs(run.id)}
    assert stages == {"a": S.CANCELLED, "b": S.CANCELLED}
    with pytest.raises(errors.ConflictError):
        await engine.cancel(run.id)


async def test_cancel_of_a_queued_run(make_engine):
    engine, _ = make_engine({})
    run = await engine.submit(pipeline(CHAIN))
    assert (await engine.cancel(run.id)).state is states.RunState.CANCELLED


async def test_routes_pick_downstream_pipelines(make_engine):
    engine, _ = make_engine({"main": fake.Outcome(route="big")})
    up = pipeline({"stages": [{"id": "main", "type": "shell", "command": "x"}],
                   "downstream": [{"pipeline": "big-one", "route": "big"}, {"pipeline": "small-one", "route": "small"}]},
                  name="up")
    for name in ("big-one", "small-one"):
        await engine.store.upsert_pipeline(pipeline({"stages": [{"id": "main", "type": "shell", "command": "x"}]}, name))
    final = await engine.execute((await engine.submit(up)).id)
    assert final.route == "big"
    assert [r.pipeline for r in await engine.store.list_runs() if r.parent_run_id == final.id] == ["big-one"]


async def test_secret_and_encrypted_env_layering(make_engine):
    engine, executor = make_engine({}, secrets={"TOKEN": "t0k3n"})
    spec = {"env": {"A": "plain", "TOKEN": "plain"}, "encrypted_env": {"E": "enc:decrypted"}, "secrets": ["TOKEN"],
            "stages": [{"id": "main", "type": "shell", "command": "x"}]}
    await engine.execute((await engine.submit(pipeline(spec), inputs={"A": "input"})).id)
    env = executor.started[0].env
    assert (env["A"], env["TOKEN"], env["E"]) == ("input", "t0k3n", "decrypted")
    assert executor.started[0].secret_env == frozenset({"TOKEN", "E"})


async def test_value_from_env_needs_the_kubernetes_executor(make_engine):
    engine, executor = make_engine({})
    spec = {"env": [{"name": "K", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}}],
            "stages": [{"id": "main", "type": "shell", "command": "x"}]}
    final = await engine.execute((await engine.submit(pipeline(spec))).id)
    assert final.state is states.RunState.FAILED and "valueFrom" in final.error
    assert executor.started == []


async def test_unknown_executor_is_refused_when_the_run_is_submitted(make_engine):
    engine, _ = make_engine({})
    spec = {"executor": "docker", "stages": [{"id": "main", "type": "shell", "command": "x"}]}
    with pytest.raises(errors.SpecError) as info:
        await engine.submit(pipeline(spec))
    (problem,) = info.value.problems
    assert problem.location == "executor"
    assert "stage 'main' asks for executor 'docker', which this server does not run" in problem.message
    assert "KUBELINE_EXECUTORS" in problem.hint
    assert await engine.store.list_runs() == []


async def test_unknown_executor_of_a_queued_run_fails_the_stage_clearly(make_engine):
    engine, _ = make_engine({})
    run = await engine.submit(pipeline({"stages": [{"id": "main", "type": "shell", "command": "x"}]}))
    engine.executors.clear()  # e.g. the server restarted with another configuration
    final = await engine.execute(run.id)
    assert "executor 'local' is not configured here" in final.error and "KUBELINE_EXECUTORS" in final.error


async def test_adopt_after_restart_collects_the_result(make_engine, tmp_path):
    engine, executor = make_engine({"a": fake.Outcome(duration=0.3, outputs={"v": 1})})
    run = await engine.submit(pipeline(CHAIN))
    driving = asyncio.create_task(engine.execute(run.id))
    while not executor.running:
        await asyncio.sleep(0.01)
    driving.cancel()  # the process "dies": its driver is gone, the attempt keeps running
    await engine.shutdown()
    revived = engine_.Engine(store=engine.store, executors={"local": executor}, logs=engine.logs,
                             secrets=engine.secrets, poll_interval=0.05)
    [final] = await revived.resume()
    assert final.state is states.RunState.SUCCEEDED
    assert executor.adopted  # the running attempt was adopted, not restarted
    assert len([s for s in executor.started if s.stage_id == "a"]) == 1


async def test_secrets_handed_back_as_data_are_masked_before_they_are_stored(make_engine):
    secret, pin = "s3cr3t-value", "987654321"
    engine, _ = make_engine({
        "a": fake.Outcome(outputs={"echo": secret, "nested": [{"k": f"x{secret}y"}], secret: 1, "pin": int(pin)},
                          route=secret),
        "b": fake.Outcome(exit_code=3, error=f"failed with {secret}"),
    }, secrets={"TOKEN": secret, "PIN": pin})
    spec = {"secrets": ["TOKEN", "PIN"], "stages": [{"id": "a", "type": "shell", "command": "x"},
                                                    {"id": "b", "type": "shell", "command": "x", "dependsOn": ["a"]}]}
    final = await engine.execute((await engine.submit(pipeline(spec))).id)
    assert final.state is states.RunState.FAILED
    stages = {s.stage_id: s for s in await engine.store.list_stage_runs(final.id)}
    assert stages["a"].outputs == {"echo": "***", "nested": [{"k": "x***y"}], "***": 1, "pin": "***"}
    assert stages["b"].error == "failed with ***" and final.error == "stage 'b' failed: failed with ***"
    assert final.route == "***"
    stored = [final, *stages.values(), *await engine.store.list_attempts(final.id),
              *await engine.store.list_events(final.id)]
    assert not [r for r in stored if secret in repr(r) or pin in repr(r)]


async def test_driven_waits_for_the_driver_of_this_engine_only(make_engine):
    """``Engine.driven``: False at once for a run this engine does not drive (queued, unknown),
    False when the wait runs out, True once its driver ended (the run final)."""
    engine, _ = make_engine({"a": fake.Outcome(duration=0.3, outputs={"v": 1})})
    run = await engine.submit(pipeline(CHAIN))
    assert await engine.driven(run.id, within=5) is False  # queued: nobody drives it yet
    assert await engine.driven("no-such-run", within=5) is False
    driving = asyncio.create_task(engine.execute(run.id))
    while run.id not in engine.drivers:
        await asyncio.sleep(0.01)
    assert await engine.driven(run.id, within=0.05) is False  # still running
    assert await engine.driven(run.id, within=30) is True
    assert (await engine.store.get_run(run.id)).state is states.RunState.SUCCEEDED
    await driving
