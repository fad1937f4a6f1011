"""Every manifest in deploy/ passes `kubectl apply --dry-run=server` on the test cluster (1.20).

Overlays are rendered with `kubectl kustomize`, moved into this module's namespace (the API
server checks namespaced objects only in a namespace that exists) and dry-run applied.
staging/production get the k8s-1.20 component (HPA v2beta2, PDB v1beta1) through a wrapper
kustomization, and a secrets.env made by `kubeline k8s secrets`; the ServiceMonitor is left out
when the cluster has no monitoring.coreos.com CRD. The CRDs are applied for real (cluster-wide,
idempotent) so that Pipeline/PipelineRun objects can be dry-run too.
"""

from __future__ import annotations

import pathlib
import shutil
import subprocess
import sys
from collections.abc import Callable
from typing import Any

import pytest
import yaml

REPO = pathlib.Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
Kubectl = Callable[..., subprocess.CompletedProcess[str]]


def _render(kubectl: Kubectl, path: pathlib.Path) -> list[dict[str, Any]]:
    out = kubectl("kustomize", str(path)).stdout
    return [d for d in yaml.safe_load_all(out) if d]


def _move(docs: list[dict[str, Any]], namespace: str, *, has_monitoring: bool) -> str:
    kept = []
    for doc in docs:
        if doc["kind"] in ("Namespace", "CustomResourceDefinition"):
            continue
        if doc["kind"] == "ServiceMonitor" and not has_monitoring:
            continue
        doc["metadata"]["namespace"] = namespace
        kept.append(doc)
    return yaml.safe_dump_all(kept)


@pytest.fixture(scope="module")
def crds_applied(kubectl: Kubectl) -> None:
    kubectl("apply", "-f", str(DEPLOY / "base" / "crds"))
    kubectl("wait", "--for=condition=Established", "crd/pipelines.kubeline.dev", "crd/pipelineruns.kubeline.dev",
            "--timeout=60s")


def _has_monitoring(kubectl: Kubectl) -> bool:
    return kubectl("get", "crd", "servicemonitors.monitoring.coreos.com", check=False).returncode == 0


def _overlay_copy(tmp_path: pathlib.Path, overlay: str) -> pathlib.Path:
    """deploy/ copied with a generated secrets.env, wrapped with the 1.20 component."""
    copy = tmp_path / "deploy"
    shutil.copytree(DEPLOY, copy)
    secrets = subprocess.run([str(pathlib.Path(sys.executable).parent / "kubeline"), "k8s", "secrets"], capture_output=True,
                             text=True, check=True).stdout
    assert "KUBELINE_SECRET_KEY=" in secrets and "POSTGRES_PASSWORD=" in secrets
    (copy / "overlays" / overlay / "secrets.env").write_text(secrets)
    wrapper = tmp_path / "wrapper"
    wrapper.mkdir()
    (wrapper / "kustomization.yaml").write_text(yaml.safe_dump({
        "apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization",
        "resources": [f"../deploy/overlays/{overlay}"], "components": ["../deploy/components/k8s-1.20"]}))
    return wrapper


@pytest.mark.parametrize("overlay", ["dev", "staging", "production"])
def test_overlay_passes_server_dry_run(overlay: str, kubectl: Kubectl, namespace: str, crds_applied: None,
                                       tmp_path: pathlib.Path) -> None:
    path = DEPLOY / "overlays" / "dev" if overlay == "dev" else _overlay_copy(tmp_path, overlay)
    docs = _render(kubectl, path)
    kinds = {d["kind"] for d in docs}
    assert {"Deployment", "StatefulSet", "Service", "Ingress", "HorizontalPodAutoscaler", "PodDisruptionBudget",
            "NetworkPolicy", "Role", "RoleBinding", "ServiceAccount", "ConfigMap", "Secret",
            "CustomResourceDefinition"} <= kinds
    if overlay == "production":
        assert "ServiceMonitor" in kinds and "PersistentVolumeClaim" in kinds
    versions = {d["kind"]: d["apiVersion"] for d in docs}
    assert versions["HorizontalPodAutoscaler"] == "autoscaling/v2beta2"
    assert versions["PodDisruptionBudget"] == "policy/v1beta1"
    proc = kubectl("apply", "--dry-run=server", "-f", "-",
                   input=_move(docs, namespace, has_monitoring=_has_monitoring(kubectl)), check=False)
    assert proc.returncode == 0, proc.stderr
    assert "(server dry run)" in proc.stdout


def test_crds_and_examples_pass_server_dry_run(kubectl: Kubectl, namespace: str, crds_applied: None) -> None:
    proc = kubectl("apply", "--dry-run=server", "-f", str(DEPLOY / "base" / "crds"), check=False)
    assert proc.returncode == 0, proc.stderr
    examples = sorted((DEPLOY / "examples").glob("*.yaml"))
    assert examples
    for example in examples:
        proc = kubectl("apply", "--dry-run=server", "-n", namespace, "-f", str(example), check=False)
        assert proc.returncode == 0, f"{example}: {proc.stderr}"


BAD = {
    "stage id": ("Pipeline", {"stages": [{"id": "Bad_ID"}]}, "spec.stages.id"),
    "missing stage id": ("Pipeline", {"stages": [{"componentType": "python"}]}, "spec.stages.id: Required value"),
    "negative timeout": ("Pipeline", {"timeout": -5, "stages": [{"id": "a"}]}, "spec.timeout"),
    "unknown executor": ("Pipeline", {"executor": "ssh", "stages": [{"id": "a"}]}, 'supported values: "local"'),
    "no pipelineRef": ("PipelineRun", {"inputs": {"a": 1}}, "spec.pipelineRef: Required value"),
    "timeout type": ("PipelineRun", {"pipelineRef": "p", "timeout": "soon"}, "spec.timeout"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_the_api_server_rejects_invalid_resources_readably(case: str, kubectl: Kubectl, namespace: str,
                                                           crds_applied: None) -> None:
    kind, spec, expected = BAD[case]
    body = {"apiVersion": "kubeline.dev/v1", "kind": kind, "metadata": {"name": "bad", "namespace": namespace},
            "spec": spec}
    # --validate=false: the API server (not kubectl's client-side check) must refuse it
    proc = kubectl("apply", "--validate=false", "-f", "-", input=yaml.safe_dump(body), check=False)
    assert proc.returncode != 0
    assert "is invalid" in proc.stderr and expected in proc.stderr, proc.stderr


def test_k8s_run_goes_where_its_pipeline_is_or_says_why(kubectl: Kubectl, namespace: str, crds_applied: None,
                                                       tmp_path: pathlib.Path, cluster: Any) -> None:
    """Without -n the PipelineRun goes to the one namespace that has the Pipeline (not `default`,
    where no operator watches); a missing Pipeline is an error in words, never an exit 0."""
    (tmp_path / "p.yaml").write_text(yaml.safe_dump({
        "apiVersion": "kubeline.dev/v1", "kind": "Pipeline", "metadata": {"name": "e2e-where", "namespace": namespace},
        "spec": {"stages": [{"id": "main", "type": "python", "file": "main.py"}],
                 "source": {"inline": {"main.py": "print(1)\n"}}}}))
    kubectl("apply", "-f", str(tmp_path / "p.yaml"))
    cli = [str(pathlib.Path(sys.executable).parent / "kubeline"), "k8s", "run", "--kubeconfig", str(cluster.kubeconfig)]
    moved = subprocess.run([*cli, "e2e-where"], capture_output=True, text=True, timeout=60, check=False)
    assert moved.returncode == 0, moved.stderr
    assert f"is in namespace {namespace}" in moved.stderr
    assert "e2e-where" in kubectl("get", "pipelineruns", "-n", namespace).stdout
    wrong = subprocess.run([*cli, "e2e-where", "-n", "default"], capture_output=True, text=True, timeout=60, check=False)
    assert wrong.returncode == 1
    assert f"it is in: {namespace}; pass -n NAMESPACE" in " ".join(wrong.stderr.split())
    missing = subprocess.run([*cli, "e2e-nowhere"], capture_output=True, text=True, timeout=60, check=False)
    assert missing.returncode == 1 and "no Pipeline 'e2e-nowhere'" in missing.stderr
