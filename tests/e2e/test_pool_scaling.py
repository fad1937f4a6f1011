"""A worker pool scaled by the server on its queue, on the real cluster.

The pool has ``autoscale`` (0-3 pods, one slot each): runs queued for it (not yet started: no
dispatcher yet) make the server's pool controller scale its Deployment up from zero; once they
run and the short ones end, it scales down after the delay while the long one still runs on a
pod (which drains: the attempt finishes, nothing is lost), then to zero.
"""

from __future__ import annotations

import asyncio
import contextlib
import pathlib
import textwrap
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from kubernetes import client

from kubeline import bootstrap, server, settings
from kubeline.domain import states
from kubeline.pipelines import loader

from .support import Cluster

pytestmark = pytest.mark.slow

SLEEPER = """
    import os, time
    from kubeline import task
    seconds = float(os.environ["SLEEP_SECONDS"])
    print("sleeping", seconds, flush=True)
    time.sleep(seconds)
    task.set_output("slept", seconds)
"""


def pipeline(root: pathlib.Path, name: str, seconds: float) -> pathlib.Path:
    folder = root / name
    folder.mkdir(parents=True)
    (folder / "main.py").write_text(textwrap.dedent(SLEEPER))
    (folder / "pipeline.yaml").write_text(
        f"executor: kubernetes-pool\ntags: [elastic]\nstages:\n  - {{id: s, file: main.py, env: {{SLEEP_SECONDS: '{seconds}'}}}}\n")
    return folder


@contextlib.asynccontextmanager
async def kubeline(cluster: Cluster, namespace: str, home: pathlib.Path, image: str, *,
                   pools: list[dict[str, Any]]) -> AsyncIterator[bootstrap.Kubeline]:
    assert cluster.kubeconfig is not None
    values: dict[str, Any] = {
        "home": home, "executor": "kubernetes-pool", "executors": ["kubernetes-pool"],
        "kubernetes_namespace": namespace, "kubernetes_kubeconfig": cluster.kubeconfig,
        "kubernetes_image": image, "kubernetes_pools": pools, "secret_key": None,
        "kubernetes_pool_interval": 0.5, "kubernetes_pending_timeout": 240}
    async with bootstrap.open_kubeline(settings.Settings(**values), replica=True) as kl:
        yield kl


@pytest.mark.timeout(600)
async def test_the_server_scales_a_pool_on_its_queue_and_back_without_killing_an_attempt(
        cluster: Cluster, namespace: str, worker_image: str, api_client: Any, tmp_path: pathlib.Path) -> None:
    apps = client.AppsV1Api(api_client)
    pools = [{"name": "elastic", "tags": ["elastic"], "slots": 1, "drainSeconds": 120,
              "autoscale": {"minReplicas": 0, "maxReplicas": 3, "scaleDownDelay": 6}}]
    folders = [pipeline(tmp_path, "elastic-long", 60), pipeline(tmp_path, "elastic-short-a", 2),
               pipeline(tmp_path, "elastic-short-b", 2)]
    seen: list[tuple[float, int, int]] = []  # (time, spec.replicas, readyReplicas)

    def replicas() -> tuple[int, int] | None:
        try:
            found = apps.read_namespaced_deployment("kl-pool-elastic", namespace)
        except client.ApiException as exc:
            if exc.status == 404:
                return None
            raise
        return found.spec.replicas or 0, found.status.ready_replicas or 0

    async def until(predicate: Any, *, within: float, what: str) -> None:
        deadline = time.monotonic() + within
        while True:
            now = await asyncio.to_thread(replicas)
            if now is not None:
                seen.append((time.monotonic(), *now))
            if await predicate(now):
                return
            assert time.monotonic() < deadline, f"timed out after {within:.0f}s waiting for {what}; seen {seen[-5:]}"
            await asyncio.sleep(0.5)

    async with kubeline(cluster, namespace, tmp_path / "home", worker_image, pools=pools) as kl:
        controller = bootstrap.pool_controller(kl)
        assert controller is not None
        scaling = asyncio.create_task(controller.run_forever())
        try:
            found = [loader.load_folder(f) for f in folders]
            for pipeline_ in found:
                await kl.store.upsert_pipeline(pipeline_)
            run_ids = [(await kl.engine.submit(p)).id for p in found]

            async def three_asked(now: tuple[int, int] | None) -> bool:
                return now is not None and now[0] == 3
            await until(three_asked, within=60, what="the Deployment scaled to 3 for 3 queued runs")
            assert {(await kl.store.get_run(r)).state for r in run_ids} == {states.RunState.QUEUED}
            assert controller.observed["elastic"].demand.queued == 3

            scaling.cancel()  # the server's own controller (a new leader) takes over, with the dispatcher
            with contextlib.suppress(asyncio.CancelledError):
                await scaling
            background = server.start_background(kl, "worker")
            assert "worker-pools" in {t.get_name() for t in background}
            try:
                long_id = run_ids[0]

                async def shorts_done(now: tuple[int, int] | None) -> bool:
                    return all([states.is_final((await kl.store.get_run(r)).state) for r in run_ids[1:]])
                await until(shorts_done, within=240, what="the two short runs finished")
                assert max(r for _, r, _ in seen) == 3

                async def scaled_down(now: tuple[int, int] | None) -> bool:
                    return now is not None and now[0] == 1
                await until(scaled_down, within=60, what="the Deployment scaled down to 1 (the long run's demand)")
                assert not states.is_final((await kl.store.get_run(long_id)).state), \
                    "the long run ended before the scale-down: the test proves nothing"

                async def long_done(now: tuple[int, int] | None) -> bool:
                    return states.is_final((await kl.store.get_run(long_id)).state)
                await until(long_done, within=180, what="the long run finished")

                async def zero(now: tuple[int, int] | None) -> bool:
                    return now is not None and now[0] == 0
                await until(zero, within=60, what="the Deployment scaled to 0 once idle")
            finally:
                for task in background:
                    task.cancel()
                await asyncio.gather(*background, return_exceptions=True)
                await kl.engine.shutdown()
            for run_id in run_ids:
                run = await kl.store.get_run(run_id)
                attempts = await kl.store.list_attempts(run_id)
                assert run.state is states.RunState.SUCCEEDED, [a.error for a in attempts]
                assert [(a.number, a.failure) for a in attempts] == [(1, None)]
            (long_attempt,) = await kl.store.list_attempts(run_ids[0])
            assert long_attempt.outputs == {"slept": 60}
        finally:
            scaling.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await scaling
    ups = [r for _, r, _ in seen]
    print(f"replicas seen: {[r for i, r in enumerate(ups) if i == 0 or r != ups[i - 1]]}")
