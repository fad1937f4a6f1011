"""Golden dicts: the Job, ConfigMap and Secret the Kubernetes executor submits for an attempt."""

from __future__ import annotations

import base64
import json
import pathlib

import pytest

from kubeline.domain import errors, specs
from kubeline.executors import base
from kubeline.executors.kubernetes import manifests

DEFAULTS = manifests.Defaults(namespace="jobs", image="worker:1", api_url="http://10.0.0.1:8080",
                              ttl_seconds=600)


def _spec(**overrides: object) -> base.AttemptSpec:
    values: dict[str, object] = {
        "attempt_id": "0190abcdef12aa11bb22cc", "run_id": "0190abcdef00ffeeddccbb", "pipeline": "sales",
        "stage_id": "load", "number": 2, "stage_type": "python", "folder": pathlib.Path("/p/sales"),
        "argv": ("python", "-u", "main.py"), "runtime": base.Runtime.PIPELINE, "python_version": "3.11",
        "requirements": None, "env": {"REGION": "eu", "DB_PASSWORD": "s3cret"},
        "secret_env": frozenset({"DB_PASSWORD"}),
        "env_from": {"API_KEY": specs.EnvFrom.model_validate(
            {"valueFrom": {"secretKeyRef": {"name": "external", "key": "api"}}})},
        "inputs": {"day": "today"}, "config": {}, "timeout": 90.5,
        "resources": specs.Resources.model_validate(
            {"requests": {"cpu": "100m", "memory": "128Mi"}, "limits": {"memory": "256Mi"}}),
    }
    values.update(overrides)
    return base.AttemptSpec(**values)  # type: ignore[arg-type]


LABELS = {
    "kubeline.dev/pipeline": "sales", "kubeline.dev/run": "0190abcdef00ffeeddccbb",
    "kubeline.dev/stage": "load", "kubeline.dev/attempt": "0190abcdef12aa11bb22cc",
    "kubeline.dev/attempt-number": "2", "app.kubernetes.io/managed-by": "kubeline",
}
NAME = "kl-0190abcdef12aa11bb22cc"


def test_job_golden() -> None:
    job = manifests.job(_spec(), defaults=DEFAULTS)
    assert job["metadata"] == {"name": NAME, "namespace": "jobs", "labels": LABELS}
    spec = job["spec"]
    assert {k: v for k, v in spec.items() if k != "template"} == {
        "backoffLimit": 0, "ttlSecondsAfterFinished": 600, "activeDeadlineSeconds": 91}
    pod = spec["template"]["spec"]
    assert spec["template"]["metadata"] == {"labels": LABELS}
    assert pod["restartPolicy"] == "Never"
    assert pod["automountServiceAccountToken"] is False
    assert pod["securityContext"] == {"runAsNonRoot": True, "runAsUser": 1000, "runAsGroup": 1000,
                                      "fsGroup": 1000, "seccompProfile": {"type": "RuntimeDefault"}}
    assert pod["volumes"] == [
        {"name": "bundle", "configMap": {"name": NAME, "defaultMode": 0o444}},
        {"name": "work", "emptyDir": {}}, {"name": "tmp", "emptyDir": {}},
        {"name": "uv-cache", "emptyDir": {}}]
    (container,) = pod["containers"]
    assert container["image"] == "worker:1" and container["imagePullPolicy"] == "IfNotPresent"
    assert container["command"] == ["python3", "/kubeline/bundle/pod.py"]
    assert container["securityContext"] == {
        "allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True, "runAsNonRoot": True,
        "runAsUser": 1000, "runAsGroup": 1000, "capabilities": {"drop": ["ALL"]}, "privileged": False}
    assert container["resources"] == {"requests": {"cpu": "100m", "memory": "128Mi"},
                                      "limits": {"memory": "256Mi"}}
    env = {item["name"]: item for item in container["env"]}
    assert env["REGION"] == {"name": "REGION", "value": "eu"}
    assert env["DB_PASSWORD"] == {"name": "DB_PASSWORD",
                                  "valueFrom": {"secretKeyRef": {"name": NAME, "key": "DB_PASSWORD"}}}
    assert env["API_KEY"] == {"name": "API_KEY",
                              "valueFrom": {"secretKeyRef": {"name": "external", "key": "api"}}}
    assert env["KUBELINE_ATTEMPT_TOKEN"]["valueFrom"] == {
        "secretKeyRef": {"name": NAME, "key": "KUBELINE_ATTEMPT_TOKEN"}}
    assert env["KUBELINE_URL"]["value"] == "http://10.0.0.1:8080"
    assert env["KUBELINE_ATTEMPT_ID"]["value"] == "0190abcdef12aa11bb22cc"
    assert "s3cret" not in json.dumps(job)


def test_pipeline_kubernetes_settings_override_defaults() -> None:
    k8s = specs.KubernetesSpec.model_validate({
        "namespace": "team", "serviceAccountName": "runner", "nodeSelector": {"pool": "batch"},
        "tolerations": [{"key": "batch", "operator": "Exists"}], "image": "custom:2",
        "imagePullPolicy": "Never"})
    job = manifests.job(_spec(kubernetes=k8s, timeout=None), defaults=DEFAULTS)
    pod = job["spec"]["template"]["spec"]
    assert job["metadata"]["namespace"] == "team"
    assert "activeDeadlineSeconds" not in job["spec"]
    assert pod["serviceAccountName"] == "runner" and pod["automountServiceAccountToken"] is True
    assert pod["nodeSelector"] == {"pool": "batch"}
    assert pod["tolerations"] == [{"key": "batch", "operator": "Exists"}]
    assert pod["containers"][0]["image"] == "custom:2"
    assert pod["containers"][0]["imagePullPolicy"] == "Never"


def test_uv_cache_on_a_claim() -> None:
    defaults = manifests.Defaults(uv_cache_claim="uv-cache")
    volumes = manifests.job(_spec(), defaults=defaults)["spec"]["template"]["spec"]["volumes"]
    assert {"name": "uv-cache", "persistentVolumeClaim": {"claimName": "uv-cache"}} in volumes


def test_config_map_and_secret_golden() -> None:
    spec = _spec()
    cm = manifests.config_map(spec, defaults=DEFAULTS, entrypoint="print()", code=b"\x1f\x8b",
                              requirements="requests==2.32.3\n")
    assert cm["metadata"] == {"name": NAME, "namespace": "jobs", "labels": LABELS}
    assert cm["binaryData"] == {"code.tar.gz": base64.b64encode(b"\x1f\x8b").decode()}
    assert json.loads(cm["data"]["inputs.json"]) == {"day": "today"}
    assert json.loads(cm["data"]["plan.json"]) == {
        "argv": ["python", "-u", "main.py"], "runtime": "pipeline", "python_version": "3.11",
        "requirements": True, "extra_packages": [], "has_code": True, "code_dir": None,
        "memory_limit": "256Mi"}
    assert cm["data"]["requirements.txt"] == "requests==2.32.3\n"
    secret = manifests.secret(spec, defaults=DEFAULTS, token="tok")
    assert secret == {"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
                      "metadata": {"name": NAME, "namespace": "jobs", "labels": LABELS},
                      "stringData": {"DB_PASSWORD": "s3cret", "KUBELINE_ATTEMPT_TOKEN": "tok"}}


def test_too_large_bundle_is_refused_with_advice() -> None:
    with pytest.raises(errors.ExecutorError, match="more than the 1000 KiB a ConfigMap holds"):
        manifests.config_map(_spec(inputs={"blob": "x" * 1_100_000}), defaults=DEFAULTS,
                             entrypoint="", code=None, requirements=None)


def test_owner_reference_and_label_values() -> None:
    ref = manifests.owner_reference({"metadata": {"name": NAME, "uid": "u-1"}})
    assert ref == {"apiVersion": "batch/v1", "kind": "Job", "name": NAME, "uid": "u-1",
                   "blockOwnerDeletion": False, "controller": False}
    assert manifests.label_value("a b/c") == "a_b_c"
    assert len(manifests.label_value("x" * 100)) == 63
