"""What the pool executor emits, and the worker-pool kustomize component, are valid Kubernetes
(1.20 and 1.29-1.34, strict schemas: ``kubeline.testing.schemas``), and the Helm values match."""

from __future__ import annotations

import pathlib
import shutil
import subprocess
import sys
from typing import Any

import pytest
import yaml

from kubeline import testing
from kubeline.domain import pools
from kubeline.executors import kubernetes_pool_manifests as pm
from kubeline.executors.kubernetes import manifests
from kubeline.testing import schemas

REPO = pathlib.Path(__file__).resolve().parents[3]
CUSTOM = {"ServiceMonitor", "Pipeline", "PipelineRun", "WorkerPool"}


def test_the_pool_objects_are_valid_on_every_supported_version() -> None:
    spec = pools.PoolSpec.model_validate({
        "name": "fast", "pipelines": ["*"], "serviceAccountName": "runner", "nodeSelector": {"pool": "yes"},
        "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "pool", "effect": "NoSchedule"}],
        "resources": {"requests": {"cpu": "250m", "memory": "256Mi"}, "limits": {"cpu": "1", "memory": "1Gi"}}})
    defaults = manifests.Defaults(namespace="team")
    files = pm.worker_files()
    objects = [pm.deployment(spec, defaults=defaults, files=files), pm.config_map(spec, defaults=defaults, files=files),
               pm.secret(spec, defaults=defaults, token="t")]
    assert schemas.problems_by_version(objects, schemas.VERSIONS) == {v: [] for v in schemas.VERSIONS}


def _render(tmp_path: pathlib.Path, *, k8s_120: bool) -> list[dict[str, Any]]:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        testing.apt_install("kubectl")
        kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.fail("kubectl is needed to render the kustomize component (apt-get install kubectl)")
    copy = tmp_path / "deploy"
    shutil.copytree(REPO / "deploy", copy)
    secrets = subprocess.run([str(pathlib.Path(sys.executable).parent / "kubeline"), "k8s", "secrets"],
                             capture_output=True, text=True, check=True).stdout
    (copy / "overlays" / "production" / "secrets.env").write_text(secrets)
    wrapper = tmp_path / "wrapper"
    wrapper.mkdir()
    components = ["../deploy/components/worker-pool"] + (["../deploy/components/k8s-1.20"] if k8s_120 else [])
    (wrapper / "kustomization.yaml").write_text(yaml.safe_dump({
        "apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization",
        "resources": ["../deploy/overlays/production"], "components": components}))
    out = subprocess.run([kubectl, "kustomize", str(wrapper)], capture_output=True, text=True, check=True,
                         timeout=120).stdout
    return [doc for doc in yaml.safe_load_all(out) if doc]


@pytest.mark.parametrize("k8s_120", [False, True])
def test_the_worker_pool_component_is_valid_and_wires_the_executor(k8s_120: bool, tmp_path: pathlib.Path) -> None:
    objects = _render(tmp_path, k8s_120=k8s_120)
    versions = ["1.20.0"] if k8s_120 else [v for v in schemas.VERSIONS if not v.startswith("1.20")]
    found = schemas.problems_by_version(objects, versions)
    assert {v: [p for p in ps if not (p.startswith(schemas.UNKNOWN) and p.rsplit(" ", 1)[-1] in CUSTOM)]
            for v, ps in found.items()} == {v: [] for v in versions}
    by_kind: dict[str, list[dict[str, Any]]] = {}
    for obj in objects:
        by_kind.setdefault(obj["kind"], []).append(obj)
    (pool,) = by_kind["WorkerPool"]
    assert pools.PoolSpec.model_validate({**pool["spec"], "name": pool["metadata"]["name"]}).tags == ["pool"]
    config = next(c for c in by_kind["ConfigMap"] if c["metadata"]["name"].startswith("kubeline-config"))
    assert config["data"]["KUBELINE_EXECUTORS"] == "kubernetes,kubernetes-pool"
    role = next(r for r in by_kind["Role"] if r["metadata"]["name"] == "kubeline")
    assert {"apiGroups": ["apps"], "resources": ["deployments"],
            "verbs": ["create", "get", "list", "watch", "patch", "update", "delete"]} in role["rules"]
    assert {"apiGroups": ["kubeline.dev"], "resources": ["workerpools/status"],
            "verbs": ["get", "patch", "update"]} in role["rules"]
    assert any("coordination.k8s.io" in r["apiGroups"] and "leases" in r["resources"] for r in role["rules"])
    hpa = next(h for h in by_kind["HorizontalPodAutoscaler"] if h["metadata"]["name"] == "kl-pool-default")
    assert hpa["apiVersion"] == ("autoscaling/v2beta2" if k8s_120 else "autoscaling/v2")
    assert hpa["spec"]["metrics"][0]["external"]["metric"]["name"] == "kubeline_pool_demand"
    assert hpa["spec"]["metrics"][0]["external"]["target"]["averageValue"] == str(pool["spec"]["slots"])
    server_policy = next(p for p in by_kind["NetworkPolicy"] if p["metadata"]["name"] == "kubeline-server")
    assert {"key": "kubeline.dev/pool", "operator": "DoesNotExist"} in \
        server_policy["spec"]["ingress"][0]["from"][0]["podSelector"]["matchExpressions"]


def test_the_keda_example_scales_the_same_pool_on_the_same_metric() -> None:
    keda = yaml.safe_load((REPO / "deploy" / "components" / "worker-pool" / "keda-scaledobject.yaml").read_text())
    hpa = yaml.safe_load((REPO / "deploy" / "components" / "worker-pool" / "hpa.yaml").read_text())
    assert keda["spec"]["scaleTargetRef"] == hpa["spec"]["scaleTargetRef"]
    (trigger,) = keda["spec"]["triggers"]
    assert trigger["metadata"]["query"] == 'max(kubeline_pool_demand{pool="default"})'
    assert trigger["metadata"]["threshold"] == hpa["spec"]["metrics"][0]["external"]["target"]["averageValue"]
