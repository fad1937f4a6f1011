"""The whole Kubernetes surface on the local cluster: `kubectl apply -k deploy/overlays/dev` brings
up PostgreSQL and the server (with the operator); a Pipeline applied with kubectl appears in the
API; a PipelineRun runs its stages as Jobs and ends Succeeded with its status written back;
`kubeline k8s logs` prints the stage logs; deleting the Pipeline removes it (finalizer).

The API answers only authenticated callers: the test gives the server a random admin service token
(KUBELINE_ADMIN_TOKEN from a Secret) and sends it as ``X-Kubeline-Token`` through the API server's
Service proxy, which keeps ``Authorization`` for itself - as ``kubeline k8s`` does with KUBELINE_TOKEN.

Needs the images kubeline-server:dev and kubeline-postgres:dev and the worker image (built by the
e2e conftest when missing or built from other sources than this checkout's).
"""

from __future__ import annotations

import json
import os
import pathlib
import secrets
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import yaml

from .support import Cluster, wait_until

REPO = pathlib.Path(__file__).resolve().parents[2]
NS = "kubeline-dev"
IMAGES = ("kubeline-server:dev", "kubeline-postgres:dev")
Kubectl = Callable[..., subprocess.CompletedProcess[str]]
ADMIN_TOKEN = secrets.token_urlsafe(32)  # this test run's; never a fixed well-known token

PIPELINE = f"""
apiVersion: kubeline.dev/v1
kind: Pipeline
metadata: {{name: e2e-etl, namespace: {NS}}}
spec:
  inputs: {{day: {{type: string, default: today}}}}
  source:
    inline:
      fetch.py: |
        from kubeline import task
        print("fetching for", task.input("day"), flush=True)
        task.set_output("rows", [1, 2, 3])
  stages:
    - {{id: fetch, type: python, file: fetch.py, inputMapping: {{day: "${{inputs.day}}"}}}}
    - id: count
      componentType: json_transform
      dependsOn: [fetch]
      inputMapping: {{rows: "${{stages.fetch.outputs.rows}}"}}
      config: {{expression: "length(rows)"}}
  outputs: [count.result]
"""

RUN = f"""
apiVersion: kubeline.dev/v1
kind: PipelineRun
metadata: {{name: e2e-etl-1, namespace: {NS}}}
spec: {{pipelineRef: e2e-etl, inputs: {{day: monday}}, timeout: 600}}
"""


@pytest.fixture(scope="module")
def deployed(deploy_images: Cluster, kubectl: Kubectl) -> Iterator[Cluster]:
    kubectl("apply", "-k", str(REPO / "deploy" / "overlays" / "dev"))
    made = kubectl("create", "secret", "generic", "kubeline-e2e-admin", "-n", NS, "-o", "name",
                   f"--from-literal=KUBELINE_ADMIN_TOKEN={ADMIN_TOKEN}", check=False)
    if made.returncode != 0:  # left by an earlier run: give it this run's token
        kubectl("delete", "secret", "kubeline-e2e-admin", "-n", NS)
        kubectl("create", "secret", "generic", "kubeline-e2e-admin", "-n", NS,
                f"--from-literal=KUBELINE_ADMIN_TOKEN={ADMIN_TOKEN}")
    kubectl("set", "env", "deployment/kubeline", "-n", NS, "--from=secret/kubeline-e2e-admin")
    try:
        yield deploy_images
    finally:
        for kind in ("pipelineruns.kubeline.dev", "pipelines.kubeline.dev"):
            kubectl("delete", kind, "--all", "-n", NS, "--timeout=60s", check=False)
        for name in kubectl("get", "pipelines.kubeline.dev", "-n", NS, "-o", "name", check=False).stdout.split():
            kubectl("patch", name, "-n", NS, "--type=merge", "-p", '{"metadata":{"finalizers":[]}}', check=False)
        kubectl("delete", "namespace", NS, "--wait=false", check=False)


def _api(kubectl: Kubectl, path: str) -> Any:
    """GET ``path`` of the server through the API server's Service proxy, as the admin token; None on an error."""
    from kubernetes import client, config
    from kubernetes.client import exceptions

    kubeconfig = kubectl("config", "view", "--raw", "--minify", "-o", "json").stdout
    api = client.CoreV1Api(config.new_client_from_config_dict(json.loads(kubeconfig)))
    try:
        answer = api.connect_get_namespaced_service_proxy_with_path(
            "kubeline:http", NS, path.lstrip("/"), _preload_content=False, _request_timeout=10,
            _headers={"X-Kubeline-Token": ADMIN_TOKEN})
    except exceptions.ApiException:
        return None
    finally:
        api.api_client.close()
    text = answer.data.decode("utf-8", "replace")
    return text if path == "/metrics" else json.loads(text)


@pytest.mark.timeout(1500)
def test_dev_overlay_runs_a_pipelinerun_as_jobs(deployed: Cluster, kubectl: Kubectl) -> None:
    for what in ("statefulset/kubeline-postgres", "deployment/kubeline"):
        proc = kubectl("rollout", "status", what, "-n", NS, "--timeout=80s", check=False)
        if proc.returncode != 0:
            proc = kubectl("rollout", "status", what, "-n", NS, "--timeout=80s", check=False)
        if proc.returncode != 0:
            pods = kubectl("get", "pods", "-n", NS, "-o", "wide", check=False).stdout
            logs = kubectl("logs", "-n", NS, "deployment/kubeline", "--tail=60", check=False)
            pytest.fail(f"{what} not ready:\n{pods}\n{logs.stdout}{logs.stderr}")
    wait_until(lambda: (_api(kubectl, "/readyz") or {}).get("status") == "ready", timeout=60,
               what="the server's /readyz through the Service")

    kubectl("apply", "-f", "-", input=PIPELINE)
    pipeline = wait_until(lambda: _api(kubectl, "/api/v1/pipelines/e2e-etl"), timeout=60,
                          what="Pipeline e2e-etl in the Kubeline API")
    assert pipeline["name"] == "e2e-etl"
    wait_until(lambda: "Ready" in kubectl("get", "klp", "e2e-etl", "-n", NS).stdout, timeout=30,
               what="Pipeline status Ready (printer column)")

    kubectl("apply", "-f", "-", input=RUN)
    from kubeline import k8s

    client = k8s.PipelineClient(namespace=NS, kubeconfig=str(deployed.kubeconfig))
    try:
        status = client.wait_for_run("e2e-etl-1", timeout=600)
    finally:
        client.close()
    body = yaml.safe_load(kubectl("get", "klpr", "e2e-etl-1", "-n", NS, "-o", "yaml").stdout)
    assert status.phase == "Succeeded", body.get("status")
    assert status.stages["fetch"].phase == "Succeeded" and status.stages["count"].phase == "Succeeded"
    assert status.start_time and status.completion_time and status.duration
    assert status.outputs.get("count.result") == "3" or "3" in json.dumps(status.outputs)
    jobs = kubectl("get", "jobs", "-n", NS, "-l", f"kubeline.dev/run={status.run_id}", "-o", "name").stdout.split()
    assert len(jobs) == 2, jobs
    run = _api(kubectl, f"/api/v1/runs/{status.run_id}")
    assert run["state"] == "succeeded" and run["triggered_by"]["kind"] == "kubernetes"
    printed = kubectl("get", "klpr", "-n", NS).stdout
    assert "e2e-etl-1" in printed and "Succeeded" in printed

    env = {**os.environ, "KUBECONFIG": str(deployed.kubeconfig), "KUBELINE_TOKEN": ADMIN_TOKEN}
    logs = subprocess.run([str(pathlib.Path(sys.executable).parent / "kubeline"), "k8s", "logs", "e2e-etl-1", "-n", NS],
                          capture_output=True, text=True, env=env, timeout=60, check=False)
    assert logs.returncode == 0, logs.stderr
    assert "fetching for monday" in logs.stdout

    metrics = _api(kubectl, "/metrics") or ""
    assert "kubeline_runs_total" in metrics and "kubeline_stage_duration_seconds" in metrics
    assert "kubeline_operator_leader 1.0" in metrics

    kubectl("delete", "pipelines.kubeline.dev", "e2e-etl", "-n", NS, "--timeout=60s")
    wait_until(lambda: _api(kubectl, "/api/v1/pipelines/e2e-etl") is None, timeout=30,
               what="the pipeline removed from Kubeline after its resource was deleted")


@pytest.mark.timeout(300)
def test_bad_pipelinerun_gets_a_failed_status_not_a_crash(deployed: Cluster, kubectl: Kubectl) -> None:
    kubectl("apply", "-f", "-", input=f"""
apiVersion: kubeline.dev/v1
kind: PipelineRun
metadata: {{name: e2e-missing, namespace: {NS}}}
spec: {{pipelineRef: does-not-exist}}
""")
    def condition() -> str:
        body = json.loads(kubectl("get", "klpr", "e2e-missing", "-n", NS, "-o", "json").stdout)
        return " ".join(f"{c.get('reason')}: {c.get('message')}" for c in (body.get("status") or {}).get("conditions", []))

    text = wait_until(lambda: "PipelineNotFound" in condition() and condition(), timeout=60,
                      what="a PipelineNotFound condition")
    assert "does-not-exist" in text
    restarts = kubectl("get", "pods", "-n", NS, "-l", "app.kubernetes.io/component=server", "-o",
                       "jsonpath={.items[*].status.containerStatuses[*].restartCount}").stdout.split()
    assert all(r == "0" for r in restarts), restarts
    assert _api(kubectl, "/api/v1/runs") is not None
    proc = kubectl("get", "--raw", f"/api/v1/namespaces/{NS}/services/kubeline:http/proxy/api/v1/runs", check=False)
    assert proc.returncode != 0 and "401" in proc.stderr + proc.stdout  # no token: refused
    time.sleep(0)
