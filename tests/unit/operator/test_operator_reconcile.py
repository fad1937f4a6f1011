"""The operator's behaviour on a real Kubeline (SQLite in a temp dir, fake executor) and an
in-memory API server: sync, submit once, status write-back, cancel, and every bad-input path."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import pathlib
from collections.abc import AsyncIterator
from typing import Any

import pytest

from kubeline import bootstrap, settings
from kubeline.domain import errors, runs, states
from kubeline.operator import reconcile
from kubeline.testing import clusters as fake_cluster
from kubeline.testing import executors as fake

NS = "team"


@pytest.fixture
async def kl(tmp_path: pathlib.Path) -> AsyncIterator[bootstrap.Kubeline]:
    async with bootstrap.open_kubeline(settings.Settings(home=tmp_path)) as k:
        yield k


def _ctx(kl: bootstrap.Kubeline, executor: fake.FakeExecutor) -> tuple[reconcile.Context, fake_cluster.MemoryCluster]:
    kl.engine.executors = {"local": executor}
    cluster = fake_cluster.MemoryCluster(NS)
    return reconcile.Context(kl=kl, kube=cluster, poll_seconds=0.05), cluster


def _pipeline(cluster: fake_cluster.MemoryCluster, name: str, spec: dict[str, Any]) -> dict[str, Any]:
    return cluster.put("pipelines", {"metadata": {"name": name, "namespace": NS}, "spec": spec})


def _run(cluster: fake_cluster.MemoryCluster, name: str, spec: dict[str, Any], *,
         age: float = 0.0) -> reconcile.RunResource:
    created = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=age)
    body = cluster.put("pipelineruns", {"metadata": {"name": name, "namespace": NS, "uid": f"uid-{name}"},
                                        "spec": spec})
    return reconcile.RunResource(namespace=NS, name=name, uid=f"uid-{name}", created=created, body=body)


async def _no_stop(seconds: float) -> bool:
    await asyncio.sleep(min(seconds, 0.05))
    return False


@contextlib.asynccontextmanager
async def _dispatching(kl: bootstrap.Kubeline) -> AsyncIterator[None]:
    task = asyncio.create_task(kl.engine.serve())
    try:
        yield
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await kl.engine.shutdown()


INLINE = {"stages": [{"id": "fetch", "type": "python", "file": "fetch.py"},
                     {"id": "load", "type": "python", "file": "load.py", "dependsOn": ["fetch"]}],
          "inputs": {"day": {"type": "string", "default": "today"}},
          "source": {"inline": {"fetch.py": "print(1)\n", "load.py": "print(2)\n"}}}


async def _sync(ctx: reconcile.Context, cluster: fake_cluster.MemoryCluster, name: str) -> dict[str, Any]:
    body = cluster.body("pipelines", name)
    return await reconcile.sync_pipeline(ctx, namespace=NS, name=name, spec=body["spec"], generation=1,
                                         old_status=body.get("status") or {})


async def test_pipeline_sync_then_run_to_success_with_status(kl: bootstrap.Kubeline) -> None:
    ctx, cluster = _ctx(kl, fake.FakeExecutor({"fetch": fake.Outcome(outputs={"rows": 3})}))
    _pipeline(cluster, "etl", INLINE)
    status = await _sync(ctx, cluster, "etl")
    assert status["phase"] == "Ready" and status["stages"] == 2
    stored = await kl.store.get_pipeline("etl")
    assert stored.source == "kubernetes"
    res = _run(cluster, "etl-1", {"pipelineRef": "etl", "inputs": {"day": "monday"}})
    async with _dispatching(kl):
        await asyncio.wait_for(reconcile.follow_run(ctx, res, sleep=_no_stop), 30)
    final = cluster.body("pipelineruns", "etl-1")["status"]
    assert final["phase"] == "Succeeded", final
    assert final["stages"]["fetch"]["phase"] == "Succeeded" and final["stages"]["load"]["phase"] == "Succeeded"
    assert final["startTime"] and final["completionTime"]
    run = await kl.store.get_run(final["runId"])
    assert run.triggered_by.kind is runs.TriggerKind.KUBERNETES and run.inputs == {"day": "monday"}
    assert cluster.body("pipelines", "etl")["status"]["lastRun"]["phase"] == "Succeeded"
    # a restarted operator (no runId written yet) finds the same run instead of making a second one
    again = _run(cluster, "etl-1", {"pipelineRef": "etl", "inputs": {"day": "monday"}})
    assert await reconcile.submit_run(ctx, again, where="w") == final["runId"]


async def test_invalid_pipeline_gets_a_readable_condition(kl: bootstrap.Kubeline) -> None:
    ctx, cluster = _ctx(kl, fake.FakeExecutor({}))
    _pipeline(cluster, "bad", {"stages": [{"id": "a", "type": "python", "file": "a.py", "dependsOn": ["lode"]}]})
    with pytest.raises(reconcile.GiveUp) as exc:
        await _sync(ctx, cluster, "bad")
    assert exc.value.reason == "InvalidSpec"
    status = cluster.body("pipelines", "bad")["status"]
    assert status["phase"] == "Invalid"
    assert "spec.stages" in status["conditions"][0]["message"] and "lode" in status["conditions"][0]["message"]
    res = _run(cluster, "bad-1", {"pipelineRef": "bad"})
    with pytest.raises(reconcile.GiveUp) as run_exc:
        await reconcile.follow_run(ctx, res, sleep=_no_stop)
    assert run_exc.value.reason == "PipelineInvalid"
    assert cluster.body("pipelineruns", "bad-1")["status"]["phase"] == "Failed"


async def test_missing_config_map_retries_with_a_message_then_syncs(kl: bootstrap.Kubeline) -> None:
    ctx, cluster = _ctx(kl, fake.FakeExecutor({}))
    _pipeline(cluster, "cm", {"source": {"configMap": {"name": "cm-files"}}})
    with pytest.raises(reconcile.Retry) as exc:
        await _sync(ctx, cluster, "cm")
    assert exc.value.reason == "SourceNotFound" and "ConfigMap team/cm-files" in exc.value.message
    assert cluster.body("pipelines", "cm")["status"]["phase"] == "Pending"
    cluster.config_maps[(NS, "cm-files")] = {"main.py": b"print(1)\n", "lib__helpers.py": b"X = 1\n"}
    status = await _sync(ctx, cluster, "cm")
    assert status["phase"] == "Ready"
    folder = pathlib.Path((await kl.store.get_pipeline("cm")).path or "")
    assert (folder / "lib" / "helpers.py").is_file()


async def test_run_for_a_missing_pipeline_waits_then_fails(kl: bootstrap.Kubeline) -> None:
    ctx, cluster = _ctx(kl, fake.FakeExecutor({}))
    young = _run(cluster, "young", {"pipelineRef": "nope"})
    with pytest.raises(reconcile.Retry, match="does not exist"):
        await reconcile.submit_run(ctx, young, where="w")
    old = _run(cluster, "old", {"pipelineRef": "nope"}, age=reconcile.PIPELINE_WAIT_SECONDS + 1)
    with pytest.raises(reconcile.GiveUp) as exc:
        await reconcile.follow_run(ctx, old, sleep=_no_stop)
    assert exc.value.reason == "PipelineNotFound"
    status = cluster.body("pipelineruns", "old")["status"]
    assert status["phase"] == "Failed" and "Pipeline team/nope" in status["error"]


async def test_a_pipeline_asking_for_an_executor_this_server_does_not_run_is_refused(
        kl: bootstrap.Kubeline) -> None:
    executor = fake.FakeExecutor({})
    ctx, cluster = _ctx(kl, executor)
    kl.engine.executors = {"kubernetes": executor}  # a server configured for kubernetes only
    _pipeline(cluster, "inside", {**INLINE, "executor": "local"})
    with pytest.raises(reconcile.GiveUp) as exc:
        await _sync(ctx, cluster, "inside")
    assert exc.value.reason == "InvalidSpec"
    status = cluster.body("pipelines", "inside")["status"]
    assert status["phase"] == "Invalid"
    message = status["conditions"][0]["message"]
    assert "executor 'local'" in message and "KUBELINE_EXECUTORS" in message, message
    with pytest.raises(errors.NotFoundError):
        await kl.store.get_pipeline("inside")
    # stored while the server still ran `local`: its runs fail with the same reason, not retry for ever
    kl.engine.executors = {"local": executor}
    await _sync(ctx, cluster, "inside")
    kl.engine.executors = {"kubernetes": executor}
    res = _run(cluster, "inside-1", {"pipelineRef": "inside"})
    with pytest.raises(reconcile.GiveUp) as run_exc:
        await reconcile.follow_run(ctx, res, sleep=_no_stop)
    assert run_exc.value.reason == "InvalidSpec" and "executor 'local'" in run_exc.value.message
    final = cluster.body("pipelineruns", "inside-1")["status"]
    assert final["phase"] == "Failed" and "executor 'local'" in str(final["conditions"]), final
    assert executor.started == []


async def test_bad_inputs_and_missing_inputs_source(kl: bootstrap.Kubeline) -> None:
    ctx, cluster = _ctx(kl, fake.FakeExecutor({}))
    _pipeline(cluster, "etl", INLINE)
    await _sync(ctx, cluster, "etl")
    res = _run(cluster, "typo", {"pipelineRef": "etl", "inputs": {"dya": "x"}})
    with pytest.raises(reconcile.GiveUp) as exc:
        await reconcile.follow_run(ctx, res, sleep=_no_stop)
    assert exc.value.reason == "InvalidInputs" and "dya" in exc.value.message
    res = _run(cluster, "from-cm", {"pipelineRef": "etl", "inputsFrom": [{"configMapRef": {"name": "inputs"}}]})
    with pytest.raises(reconcile.Retry, match="ConfigMap team/inputs"):
        await reconcile.submit_run(ctx, res, where="w")
    cluster.forbidden = True
    res = _run(cluster, "secret", {"pipelineRef": "etl", "inputsFrom": [{"secretRef": {"name": "s"}}]})
    with pytest.raises(reconcile.GiveUp, match="forbidden"):
        await reconcile.submit_run(ctx, res, where="w")


async def test_cancel_by_spec_and_by_deletion(kl: bootstrap.Kubeline) -> None:
    ctx, cluster = _ctx(kl, fake.FakeExecutor({"fetch": fake.Outcome(hang=True)}))
    _pipeline(cluster, "etl", INLINE)
    await _sync(ctx, cluster, "etl")
    res = _run(cluster, "c1", {"pipelineRef": "etl"})
    async with _dispatching(kl):
        follower = asyncio.create_task(reconcile.follow_run(ctx, res, sleep=_no_stop))
        for _ in range(200):
            if (cluster.body("pipelineruns", "c1").get("status") or {}).get("phase") == "Running":
                break
            await asyncio.sleep(0.05)
        cluster.body("pipelineruns", "c1")["spec"]["cancel"] = True
        await asyncio.wait_for(follower, 30)
        assert cluster.body("pipelineruns", "c1")["status"]["phase"] == "Cancelled"

        res2 = _run(cluster, "c2", {"pipelineRef": "etl"})
        run_id = await reconcile.submit_run(ctx, res2, where="w")
        await reconcile.cancel_deleted_run(ctx, run_id=run_id, where="w")
        for _ in range(200):
            if states.is_final((await kl.store.get_run(run_id)).state):
                break
            await asyncio.sleep(0.05)
        assert (await kl.store.get_run(run_id)).state is states.RunState.CANCELLED


async def test_pipeline_delete_and_name_conflicts(kl: bootstrap.Kubeline) -> None:
    ctx, cluster = _ctx(kl, fake.FakeExecutor({}))
    _pipeline(cluster, "etl", INLINE)
    await _sync(ctx, cluster, "etl")
    other = reconcile.Context(kl=kl, kube=fake_cluster.MemoryCluster("other"))
    other.kube.put("pipelines", {"metadata": {"name": "etl", "namespace": "other"}, "spec": INLINE})  # type: ignore[attr-defined]
    with pytest.raises(reconcile.GiveUp) as exc:
        await reconcile.sync_pipeline(other, namespace="other", name="etl", spec=INLINE, generation=1, old_status={})
    assert exc.value.reason == "NameConflict"
    await reconcile.remove_pipeline(other, namespace="other", name="etl")  # not its pipeline: kept
    await kl.store.get_pipeline("etl")
    await reconcile.remove_pipeline(ctx, namespace=NS, name="etl")
    with pytest.raises(errors.NotFoundError):
        await kl.store.get_pipeline("etl")


async def test_api_server_unreachable_is_an_error_not_a_crash(kl: bootstrap.Kubeline) -> None:
    ctx, cluster = _ctx(kl, fake.FakeExecutor({}))
    _pipeline(cluster, "etl", INLINE)
    cluster.unreachable = True
    with pytest.raises(errors.KubelineError, match="cannot reach"):
        await _sync(ctx, cluster, "etl")
    cluster.unreachable = False
    assert (await _sync(ctx, cluster, "etl"))["phase"] == "Ready"


async def test_a_scheduled_run_updates_the_pipeline_last_run(kl: bootstrap.Kubeline) -> None:
    ctx, cluster = _ctx(kl, fake.FakeExecutor({}))
    _pipeline(cluster, "nightly", {**INLINE, "schedule": "0 2 * * *"})
    await _sync(ctx, cluster, "nightly")
    pipeline = await kl.store.get_pipeline("nightly")
    async with _dispatching(kl):
        run = await kl.engine.submit(pipeline, triggered_by=runs.TriggeredBy(kind=runs.TriggerKind.SCHEDULE,
                                                                             detail="0 2 * * *"))
        run = await asyncio.wait_for(kl.engine.execute(run.id), 30)
    await reconcile.refresh_pipeline(ctx, namespace=NS, name="nightly")
    status = cluster.body("pipelines", "nightly")["status"]
    assert status["lastRun"]["runId"] == run.id and status["lastRun"]["phase"] == "Succeeded"
    assert status["lastRun"]["time"] and status["nextSchedule"]
