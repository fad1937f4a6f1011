"""The pool executor works with nothing more than deploy/rbac/worker-pool.yaml grants."""

from __future__ import annotations

import base64
import pathlib
from typing import Any

import yaml
from kubernetes import client

from kubeline.domain import states

from .support import Cluster, wait_until
from .test_pool import CHAIN, chain_yaml, kubeline, pipeline, run_folder

RBAC = pathlib.Path(__file__).resolve().parents[2] / "deploy" / "rbac" / "worker-pool.yaml"
ACCOUNT = "kubeline-pool-executor"


def _token_kubeconfig(api_client: Any, namespace: str, admin_kubeconfig: pathlib.Path, out: pathlib.Path) -> pathlib.Path:
    core = client.CoreV1Api(api_client)

    def token() -> str | None:
        for ref in core.read_namespaced_service_account(ACCOUNT, namespace).secrets or []:
            data = core.read_namespaced_secret(ref.name, namespace).data or {}
            if "token" in data:
                return base64.b64decode(data["token"]).decode()
        return None

    value = wait_until(token, timeout=30, what=f"the {ACCOUNT} ServiceAccount token")
    cluster = yaml.safe_load(admin_kubeconfig.read_text())["clusters"][0]["cluster"]
    out.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "pool",
        "clusters": [{"name": "c", "cluster": cluster}], "users": [{"name": "pool", "user": {"token": value}}],
        "contexts": [{"name": "pool", "context": {"cluster": "c", "user": "pool", "namespace": namespace}}]}))
    return out


async def test_runs_on_a_pool_with_only_the_pool_role(cluster: Cluster, namespace: str, worker_image: str,
                                                      api_client: Any, kubectl: Any, tmp_path: pathlib.Path) -> None:
    assert cluster.kubeconfig is not None
    kubectl("apply", "-n", namespace, "-f", str(RBAC))
    kubeconfig = _token_kubeconfig(api_client, namespace, cluster.kubeconfig, tmp_path / "pool.kubeconfig")
    for verb, resource in (("create", "jobs"), ("delete", "deployments"), ("list", "secrets")):
        denied = kubectl("--kubeconfig", str(kubeconfig), "auth", "can-i", verb, resource, check=False)
        assert denied.stdout.strip() == "no", (verb, resource)
    folder = pipeline(tmp_path, "least", {**CHAIN, "pipeline.yaml": chain_yaml(2)})
    async with kubeline(cluster, namespace, tmp_path / "home", worker_image, kubernetes_kubeconfig=kubeconfig,
                        pools=[{"name": "least", "pipelines": ["least"]}]) as kl:
        run = await run_folder(kl, folder)
        attempts = await kl.store.list_attempts(run.id)
    assert run.state is states.RunState.SUCCEEDED, [a.error for a in attempts]
    assert {a.stage_id: a.outputs for a in attempts}["s1"] == {"n": 2}
    role = yaml.safe_load_all(RBAC.read_text())
    rules = next(doc for doc in role if doc["kind"] == "Role")["rules"]
    without_proxy = [rule for rule in rules if rule["resources"] != ["pods/proxy"]]
    kubectl("patch", "role", "kubeline-pool-executor", "-n", namespace, "--type=merge", "-p",
            yaml.safe_dump({"rules": without_proxy}))
    async with kubeline(cluster, namespace, tmp_path / "home2", worker_image, kubernetes_kubeconfig=kubeconfig,
                        pools=[{"name": "least", "pipelines": ["least"]}]) as kl:
        run = await run_folder(kl, folder)
        first = (await kl.store.list_attempts(run.id))[0]
    assert run.state is states.RunState.FAILED
    assert first.failure is states.FailureKind.START_FAILED
    assert "refused the request to pool pod" in first.error and "needs pods/proxy" in first.error


async def test_the_pool_controller_scales_and_writes_status_with_only_the_pool_role(
        cluster: Cluster, namespace: str, worker_image: str, api_client: Any, kubectl: Any,
        tmp_path: pathlib.Path) -> None:
    """A server's pool controller (the Lease, autoscale, WorkerPool status) needs nothing more."""
    import asyncio

    from kubeline import bootstrap
    from kubeline.operator import crds

    assert cluster.kubeconfig is not None
    kubectl("apply", "-f", "-", input=crds.render()["workerpools.yaml"])
    kubectl("wait", "--for=condition=Established", "crd/workerpools.kubeline.dev", "--timeout=60s")
    kubectl("apply", "-n", namespace, "-f", str(RBAC))  # as shipped (the test above narrows it)
    kubectl("apply", "-n", namespace, "-f", "-", input=yaml.safe_dump({
        "apiVersion": "kubeline.dev/v1", "kind": "WorkerPool", "metadata": {"name": "scaled"},
        "spec": {"tags": ["scaled"], "autoscale": {"minReplicas": 1, "maxReplicas": 2}}}))
    kubeconfig = _token_kubeconfig(api_client, namespace, cluster.kubeconfig, tmp_path / "pool.kubeconfig")
    custom = client.CustomObjectsApi(api_client)

    def ready_reason() -> str | None:
        found = custom.get_namespaced_custom_object("kubeline.dev", "v1", namespace, "workerpools", "scaled")
        return next((c["reason"] for c in (found.get("status") or {}).get("conditions") or []
                     if c["type"] == "Ready"), None)

    async with kubeline(cluster, namespace, tmp_path / "home3", worker_image, kubernetes_kubeconfig=kubeconfig,
                        pools=[], kubernetes_pool_interval=0.5) as kl:
        controller = bootstrap.pool_controller(kl)
        assert controller is not None
        acting = asyncio.create_task(controller.run_forever())
        try:
            await asyncio.to_thread(wait_until, lambda: ready_reason() == "PodsReady", timeout=120,
                                    what="WorkerPool scaled: its pod ready, written by the controller")
        finally:
            acting.cancel()
            await asyncio.gather(acting, return_exceptions=True)
    lease = client.CoordinationV1Api(api_client).read_namespaced_lease("kubeline-worker-pools", namespace)
    assert lease.spec.holder_identity is None  # released at shutdown, so another replica need not wait
    deployment = client.AppsV1Api(api_client).read_namespaced_deployment("kl-pool-scaled", namespace)
    assert deployment.spec.replicas == 1
