"""The executor works with nothing more than deploy/rbac/executor.yaml grants."""

from __future__ import annotations

import base64
import pathlib
import subprocess
from collections.abc import Callable
from typing import Any

import yaml
from kubernetes import client

from kubeline.domain import states

from .k8s_executor_support import REPO, Rig, only_attempt, rig, run_folder
from .support import wait_until

__all__ = ["rig"]
RBAC = REPO / "deploy" / "rbac" / "executor.yaml"


def _token_kubeconfig(api_client: Any, namespace: str, admin_kubeconfig: pathlib.Path,
                      out: pathlib.Path) -> pathlib.Path:
    """A kubeconfig that authenticates as the kubeline-executor ServiceAccount (1.20: its token Secret)."""
    core = client.CoreV1Api(api_client)

    def token() -> str | None:
        account = core.read_namespaced_service_account("kubeline-executor", namespace)
        for ref in account.secrets or []:
            data = core.read_namespaced_secret(ref.name, namespace).data or {}
            if "token" in data:
                return base64.b64decode(data["token"]).decode()
        return None

    value = wait_until(token, timeout=30, what="the kubeline-executor ServiceAccount token")
    admin = yaml.safe_load(admin_kubeconfig.read_text())
    cluster = admin["clusters"][0]["cluster"]
    out.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "executor",
        "clusters": [{"name": "c", "cluster": cluster}],
        "users": [{"name": "executor", "user": {"token": value}}],
        "contexts": [{"name": "executor", "context": {"cluster": "c", "user": "executor",
                                                       "namespace": namespace}}]}))
    return out


async def test_runs_with_only_the_executor_role(rig: Rig, api_client: Any, tmp_path: pathlib.Path,
                                                kubectl: Callable[..., subprocess.CompletedProcess[str]]) -> None:
    kubectl("apply", "-n", rig.namespace, "-f", str(RBAC))
    kubeconfig = _token_kubeconfig(api_client, rig.namespace, rig.kubeconfig, tmp_path / "executor.kubeconfig")
    denied = kubectl("--kubeconfig", str(kubeconfig), "auth", "can-i", "create", "deployments", check=False)
    assert denied.stdout.strip() == "no"
    folder = rig.pipeline("rbac", {"main.py": "from kubeline import task\nprint('with least privilege')\n"
                                              "task.set_output('ok', True)\n"})
    async with rig.kubeline(kubernetes_kubeconfig=kubeconfig) as kl:
        run = await run_folder(kl, folder)
        attempt = await only_attempt(kl, run.id)
    assert run.state is states.RunState.SUCCEEDED, attempt.error
    assert attempt.outputs == {"ok": True}
