"""Every object Kubeline emits or deploys is valid on Kubernetes 1.20 and on 1.29-1.34.

Strict schema validation with kubernetes-validate (``kubeline.testing.schemas``): the Job,
Secret and ConfigMap of an attempt (inline bundle and ConfigMap bundle, code claim, resources,
env from Secrets), the CRDs, the operator's Lease, and every object of every kustomize overlay
(rendered with ``kubectl kustomize``): as shipped for 1.29-1.34 (``policy/v1``,
``autoscaling/v2``), and with the ``k8s-1.20`` component (``policy/v1beta1``,
``autoscaling/v2beta2``) for 1.20-1.22 - both branches, each against its versions.
The Helm chart is not rendered here: no trusted Helm binary or SDK is installable from the
registries this project may use - Debian's apt has none (``apt-cache search helm``: only the
Emacs package of that name), and PyPI/npm offer only unofficial wrappers or re-implementations,
none well known - so its structure is tested without rendering
(tests/unit/operator/test_operator_helm_chart.py) and its objects are not schema-validated.
"""

from __future__ import annotations

import pathlib
import shutil
import subprocess
import sys
from typing import Any

import pytest
import yaml

from kubeline import testing
from kubeline.executors import base
from kubeline.executors.kubernetes import manifests
from kubeline.operator import crds, leader
from kubeline.testing import schemas

DEPLOY = pathlib.Path(__file__).resolve().parents[3] / "deploy"
NEW = tuple(v for v in schemas.VERSIONS if not v.startswith("1.20"))
CUSTOM = {"ServiceMonitor", "Pipeline", "PipelineRun"}  # custom resources: no schema in the package


def _spec(**overrides: object) -> base.AttemptSpec:
    values: dict[str, object] = {
        "attempt_id": "0190abcdef12aa11bb22cc", "run_id": "r1", "pipeline": "p", "stage_id": "s",
        "number": 1, "stage_type": "python", "folder": None, "argv": ("python", "main.py"),
        "runtime": base.Runtime.PIPELINE, "python_version": "3.11", "requirements": None,
        "inputs": {"day": "today"}, "timeout": 60, "env": {"A": "1", "PW": "secret"}, "secret_env": ("PW",)}
    values.update(overrides)
    return base.AttemptSpec(**values)  # type: ignore[arg-type]


def _emitted() -> list[dict[str, Any]]:
    from kubernetes import client

    spec = _spec()
    defaults = manifests.Defaults(namespace="team", api_url="http://kubeline.team:8080", code_claim="code")
    inline = manifests.inline_bundle(spec, entrypoint="print(1)", code=b"\x1f\x8b", requirements=None)
    objects: list[dict[str, Any]] = [
        dict(manifests.job(spec, defaults=defaults, inline=inline)),
        dict(manifests.job(spec, defaults=defaults, code_sub_path="p/abc")),
        dict(manifests.config_map(spec, defaults=defaults, entrypoint="print(1)", code=b"\x00", requirements="x\n")),
        dict(manifests.secret(spec, defaults=defaults, token="t")),
        *(yaml.safe_load(text) for text in crds.render().values()),
    ]
    leases = leader.KubernetesLeases(api_client=client.ApiClient(), namespace="team", name="kubeline-operator")
    record = leader.Record(holder="pod-a", lease_seconds=15, renew_time="2026-01-01T00:00:00.000000+00:00",
                           transitions=1, version="")
    lease = client.ApiClient().sanitize_for_serialization(leases._body(record))
    objects.append({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", **lease})
    return objects


def test_what_the_executor_and_operator_emit_is_valid() -> None:
    objects = _emitted()
    assert {o["kind"] for o in objects} == {"Job", "ConfigMap", "Secret", "CustomResourceDefinition", "Lease"}
    assert schemas.problems_by_version(objects, schemas.VERSIONS) == {v: [] for v in schemas.VERSIONS}


def test_an_invalid_object_is_caught() -> None:
    job = dict(manifests.job(_spec(), defaults=manifests.Defaults()))
    job["spec"] = {**job["spec"], "backofLimit": 0}
    (problem,) = schemas.problems([job], "1.34.0")
    assert "backofLimit" in problem


def _kubectl() -> str:
    found = shutil.which("kubectl")
    if found is None:
        testing.apt_install("kubectl")
        found = shutil.which("kubectl")
    if found is None:
        pytest.fail("kubectl is needed to render the kustomize overlays (apt-get install kubectl)")
    return found


def _render(tmp_path: pathlib.Path, overlay: str, *, k8s_120: bool) -> list[dict[str, Any]]:
    copy = tmp_path / "deploy"
    shutil.copytree(DEPLOY, copy)
    secrets = subprocess.run([str(pathlib.Path(sys.executable).parent / "kubeline"), "k8s", "secrets"],
                             capture_output=True, text=True, check=True).stdout
    (copy / "overlays" / overlay / "secrets.env").write_text(secrets)
    wrapper = tmp_path / "wrapper"
    wrapper.mkdir()
    (wrapper / "kustomization.yaml").write_text(yaml.safe_dump({
        "apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization",
        "resources": [f"../deploy/overlays/{overlay}"],
        "components": ["../deploy/components/k8s-1.20"] if k8s_120 else []}))
    out = subprocess.run([_kubectl(), "kustomize", str(wrapper)], capture_output=True, text=True, check=True,
                         timeout=120).stdout
    return [doc for doc in yaml.safe_load_all(out) if doc]


@pytest.mark.parametrize("overlay", ["staging", "production"])  # dev is for the 1.20 local cluster
def test_every_overlay_object_is_valid_on_1_29_to_1_34(overlay: str, tmp_path: pathlib.Path) -> None:
    objects = _render(tmp_path, overlay, k8s_120=False)
    versions = {o["kind"]: o["apiVersion"] for o in objects}
    assert versions["PodDisruptionBudget"] == "policy/v1"
    assert versions["HorizontalPodAutoscaler"] == "autoscaling/v2"
    found = schemas.problems_by_version(objects, NEW)
    assert {v: [p for p in ps if not _custom(p)] for v, ps in found.items()} == {v: [] for v in NEW}
    assert len(objects) >= 15


@pytest.mark.parametrize("overlay", ["dev", "staging", "production"])
def test_every_overlay_object_is_valid_on_1_20_with_its_component(overlay: str, tmp_path: pathlib.Path) -> None:
    objects = _render(tmp_path, overlay, k8s_120=True)
    versions = {o["kind"]: o["apiVersion"] for o in objects}
    assert versions["PodDisruptionBudget"] == "policy/v1beta1"
    assert versions["HorizontalPodAutoscaler"] == "autoscaling/v2beta2"
    found = schemas.problems(objects, "1.20.0")
    assert [p for p in found if not _custom(p)] == []
    if overlay != "dev":  # dev has the component built in
        plain = schemas.problems(_render(tmp_path / "plain", overlay, k8s_120=False), "1.20.0")
        assert any("autoscaling/v2 HorizontalPodAutoscaler" in p for p in plain)  # why the component exists


def _custom(problem: str) -> bool:
    return problem.startswith(schemas.UNKNOWN) and problem.rsplit(" ", 1)[-1] in CUSTOM


def _secret_key_ref(objects: list[dict[str, Any]]) -> dict[str, Any]:
    server = next(o for o in objects if o["kind"] == "Deployment" and o["metadata"]["name"] == "kubeline")
    env = server["spec"]["template"]["spec"]["containers"][0]["env"]
    return next(e for e in env if e["name"] == "KUBELINE_SECRET_KEY")["valueFrom"]["secretKeyRef"]


def test_production_requires_the_fernet_key_and_dev_may_make_its_own(tmp_path: pathlib.Path) -> None:
    """Replicas must share one key: production refuses to start a pod without it (the kubelet says which key
    is missing); one dev pod may make a key of its own on its volume."""
    assert not _secret_key_ref(_render(tmp_path / "prod", "production", k8s_120=False)).get("optional", False)
    assert _secret_key_ref(_render(tmp_path / "dev", "dev", k8s_120=True))["optional"] is True


def test_the_dev_overlay_runs_one_server_pod_at_a_time(tmp_path: pathlib.Path) -> None:
    """Its data dir is an emptyDir per pod: two pods at once (a rolling update, a second replica)
    would each hold pipeline folders of Pipeline resources the other lacks."""
    objects = {o["kind"]: o for o in _render(tmp_path, "dev", k8s_120=True) if o["metadata"]["name"] == "kubeline"}
    deployment = objects["Deployment"]
    assert deployment["spec"]["replicas"] == 1
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}
    assert [v for v in deployment["spec"]["template"]["spec"]["volumes"] if v["name"] == "data"] == [
        {"name": "data", "emptyDir": {}}]
    assert (objects["HorizontalPodAutoscaler"]["spec"]["minReplicas"],
            objects["HorizontalPodAutoscaler"]["spec"]["maxReplicas"]) == (1, 1)
