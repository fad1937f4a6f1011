"""deploy/components/code-claim (large pipeline folders from a shared PVC) renders onto an overlay
and passes `kubectl apply --dry-run=server` on the test cluster."""

from __future__ import annotations

import pathlib
import shutil
import subprocess
from collections.abc import Callable
from typing import Any

import yaml

from .test_deploy_manifests import DEPLOY, _has_monitoring, _move, _render

Kubectl = Callable[..., subprocess.CompletedProcess[str]]


def test_code_claim_component_wires_the_server_and_passes_server_dry_run(
        kubectl: Kubectl, namespace: str, tmp_path: pathlib.Path) -> None:
    shutil.copytree(DEPLOY, tmp_path / "deploy")
    wrapper = tmp_path / "wrapper"
    wrapper.mkdir()
    (wrapper / "kustomization.yaml").write_text(yaml.safe_dump({
        "apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization",
        "resources": ["../deploy/overlays/dev"], "components": ["../deploy/components/code-claim"]}))
    docs = _render(kubectl, wrapper)
    by_kind: dict[tuple[str, str], dict[str, Any]] = {(d["kind"], d["metadata"]["name"]): d for d in docs}
    claim = by_kind["PersistentVolumeClaim", "kubeline-code"]
    assert claim["spec"]["accessModes"] == ["ReadWriteMany"]
    (config,) = [d for (kind, _), d in by_kind.items() if kind == "ConfigMap" and
                 d["metadata"]["name"].startswith("kubeline-config")]
    assert config["data"]["KUBELINE_KUBERNETES_CODE_CLAIM"] == "kubeline-code"
    assert config["data"]["KUBELINE_KUBERNETES_CODE_DIR"] == "/var/lib/kubeline-code"
    pod = by_kind["Deployment", "kubeline"]["spec"]["template"]["spec"]
    assert {"name": "code", "persistentVolumeClaim": {"claimName": "kubeline-code"}} in pod["volumes"]
    assert {"name": "code", "mountPath": "/var/lib/kubeline-code"} in pod["containers"][0]["volumeMounts"]
    proc = kubectl("apply", "--dry-run=server", "-f", "-",
                   input=_move(docs, namespace, has_monitoring=_has_monitoring(kubectl)), check=False)
    assert proc.returncode == 0, proc.stderr
