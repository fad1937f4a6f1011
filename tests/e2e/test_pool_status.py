"""``WorkerPool`` status written by the server's pool controller, on the real cluster, as
``kubectl get workerpools`` shows it: ready pods, slots, attempts, and the Ready / Invalid
conditions with their reasons (a spec the API server accepts but the pool model refuses,
unschedulable pods, a pool that settings override)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import pathlib
import textwrap
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from kubernetes import client

from kubeline import bootstrap, settings
from kubeline.domain import states
from kubeline.operator import crds
from kubeline.pipelines import loader

from .support import Cluster

pytestmark = pytest.mark.slow

SLEEPER = """
    import time
    print("working", flush=True)
    time.sleep(20)
"""


def pipeline(root: pathlib.Path, name: str, tag: str) -> pathlib.Path:
    folder = root / name
    folder.mkdir(parents=True)
    (folder / "main.py").write_text(textwrap.dedent(SLEEPER))
    (folder / "pipeline.yaml").write_text(f"executor: kubernetes-pool\ntags: [{tag}]\n")
    return folder


@contextlib.asynccontextmanager
async def kubeline(cluster: Cluster, namespace: str, home: pathlib.Path, image: str) -> AsyncIterator[bootstrap.Kubeline]:
    assert cluster.kubeconfig is not None
    values: dict[str, Any] = {
        "home": home, "executor": "kubernetes-pool", "executors": ["kubernetes-pool"],
        "kubernetes_namespace": namespace, "kubernetes_kubeconfig": cluster.kubeconfig,
        "kubernetes_image": image, "secret_key": None, "kubernetes_pool_interval": 0.5,
        "kubernetes_pools": [{"name": "shadow", "pipelines": ["nothing"]}]}
    async with bootstrap.open_kubeline(settings.Settings(**values), replica=True) as kl:
        yield kl


@pytest.mark.timeout(420)
async def test_workerpool_status_says_what_each_pool_is_doing_and_why_not(
        cluster: Cluster, namespace: str, worker_image: str, api_client: Any, kubectl: Callable[..., Any],
        tmp_path: pathlib.Path) -> None:
    kubectl("apply", "-f", "-", input=crds.render()["workerpools.yaml"])
    kubectl("wait", "--for=condition=Established", "crd/workerpools.kubeline.dev", "--timeout=60s")
    kubectl("apply", "-n", namespace, "-f", "-", input=textwrap.dedent("""
        apiVersion: kubeline.dev/v1
        kind: WorkerPool
        metadata: {name: ok}
        spec: {slots: 2, tags: [ok]}
        ---
        apiVersion: kubeline.dev/v1
        kind: WorkerPool
        metadata: {name: broken}
        spec: {slots: 2}
        ---
        apiVersion: kubeline.dev/v1
        kind: WorkerPool
        metadata: {name: nowhere}
        spec:
          tags: [nowhere]
          nodeSelector: {kubeline.dev/no-such-node: "x"}
          autoscale: {minReplicas: 1, maxReplicas: 1}
          requirements: ["six==1.16.0"]   # accepted by the CRD; never installed (no node)
        ---
        apiVersion: kubeline.dev/v1
        kind: WorkerPool
        metadata: {name: shadow}
        spec: {tags: [shadow]}
    """))
    custom = client.CustomObjectsApi(api_client)

    def status(name: str) -> dict[str, Any]:
        found = custom.get_namespaced_custom_object("kubeline.dev", "v1", namespace, "workerpools", name)
        return dict(found.get("status") or {})

    def condition(name: str, kind: str = "Ready") -> dict[str, Any]:
        return next((c for c in status(name).get("conditions") or [] if c["type"] == kind), {})

    async def until(check: Callable[[], bool], *, within: float, what: str) -> None:
        deadline = time.monotonic() + within
        while not await asyncio.to_thread(check):
            assert time.monotonic() < deadline, (
                f"timed out after {within:.0f}s waiting for {what}: "
                + json.dumps({n: status(n) for n in ("ok", "broken", "nowhere", "shadow")}))
            await asyncio.sleep(0.5)

    async with kubeline(cluster, namespace, tmp_path / "home", worker_image) as kl:
        controller = bootstrap.pool_controller(kl)
        assert controller is not None
        acting = asyncio.create_task(controller.run_forever())
        try:
            busy = loader.load_folder(pipeline(tmp_path, "busy", "ok"))
            stuck = loader.load_folder(pipeline(tmp_path, "stuck", "nowhere"))
            for found in (busy, stuck):
                await kl.store.upsert_pipeline(found)
            running = asyncio.ensure_future(kl.engine.execute((await kl.engine.submit(busy)).id))
            await kl.engine.submit(stuck)  # stays queued: no dispatcher here

            await until(lambda: status("ok").get("attempts", {}).get("running") == 1, within=180,
                        what="pool ok running the busy attempt")
            ok = status("ok")
            assert (ok["replicas"], ok["readyReplicas"], ok["slots"]) == (1, 1, 2)
            assert condition("ok")["status"] == "True" and condition("ok")["reason"] == "PodsReady"
            assert condition("ok", "Invalid")["status"] == "False"

            await until(lambda: condition("nowhere").get("reason") == "Unschedulable", within=60,
                        what="pool nowhere unschedulable")
            nowhere = status("nowhere")
            assert condition("nowhere")["status"] == "False"
            assert "node(s) didn't match" in condition("nowhere")["message"]
            assert nowhere["attempts"] == {"running": 0, "waiting": 0, "queued": 1}
            assert (nowhere["replicas"], nowhere["readyReplicas"], nowhere["desiredReplicas"]) == (1, 0, 1)

            assert condition("broken", "Invalid")["status"] == "True"
            assert condition("broken")["reason"] == "InvalidSpec"
            assert condition("broken")["message"].startswith(  # the API server's schema cannot say this one
                "spec: pool 'broken' names no pipelines and no tags, so it would serve nothing: add pipelines")
            assert condition("shadow", "Invalid")["reason"] == "OverriddenBySettings"

            for name in ("ok", "broken", "nowhere", "shadow"):
                generation = custom.get_namespaced_custom_object(
                    "kubeline.dev", "v1", namespace, "workerpools", name)["metadata"]["generation"]
                assert status(name)["observedGeneration"] == generation
            table = kubectl("get", "workerpools", "-n", namespace).stdout
            print(table)
            header, *rows = table.splitlines()
            assert header.split() == ["NAME", "READY", "PODS", "WANT", "SLOTS", "RUNNING", "WAITING", "QUEUED",
                                      "REASON", "AGE"]
            by_name = {row.split()[0]: row.split()[1:-1] for row in rows}
            assert by_name["ok"] == ["True", "1", "1", "2", "1", "0", "0", "PodsReady"]
            assert by_name["nowhere"] == ["False", "0", "1", "0", "0", "0", "1", "Unschedulable"]
            assert by_name["broken"] == ["False", "0", "0", "0", "0", "0", "0", "InvalidSpec"]

            kubectl("patch", "workerpool", "ok", "-n", namespace, "--type=merge", "-p", '{"spec": {"slots": 3}}')
            await until(lambda: status("ok").get("observedGeneration") == 2, within=30,
                        what="the new generation of pool ok observed")
            run = await asyncio.wait_for(running, 120)
            assert run.state is states.RunState.SUCCEEDED
        finally:
            acting.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await acting
