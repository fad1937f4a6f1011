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

import base64
import hashlib
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

from .support import Cluster, Pods, network_policy_enforced, wait_until

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
    # An earlier run's namespace may still be terminating (its teardown does not wait): nothing
    # can be created in it until it is gone.
    wait_until(lambda: "Terminating" not in kubectl("get", "namespace", NS, "--ignore-not-found", "-o",
                                                     "jsonpath={.status.phase}").stdout,
               timeout=180, interval=2, what=f"namespace {NS} left by an earlier run to be deleted")
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


def _proxy_get(kubectl: Kubectl, path: str, *, token: str | None) -> tuple[int, str]:
    """GET ``path`` of the server through the API server's Service proxy: (HTTP status, body)."""
    from kubernetes import client, config
    from kubernetes.client import exceptions

    kubeconfig = kubectl("config", "view", "--raw", "--minify", "-o", "json").stdout
    api = client.CoreV1Api(config.new_client_from_config_dict(json.loads(kubeconfig)))
    try:
        answer = api.connect_get_namespaced_service_proxy_with_path(
            "kubeline:http", NS, path.lstrip("/"), _preload_content=False, _request_timeout=10,
            _headers={"X-Kubeline-Token": token} if token else {})
    except exceptions.ApiException as exc:
        return exc.status, str(exc.body or "")
    finally:
        api.api_client.close()
    return answer.status, answer.data.decode("utf-8", "replace")


def _api(kubectl: Kubectl, path: str) -> Any:
    """GET ``path`` as the admin token; None on an error."""
    status, text = _proxy_get(kubectl, path, token=ADMIN_TOKEN)
    if status != 200:
        return None
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
    status, text = _proxy_get(kubectl, "/api/v1/runs", token=None)
    assert status == 401, (status, text[:300])  # no token: refused (kubectl get --raw hides the code)
    time.sleep(0)


# --- What a stage pod of the deployed server can reach (issue 13, item 6) ----------------------
# A stage's code is the user's: it must hand back its results on the upload port and reach
# nothing else of the server. The probe stage reports what it sees; the test judges.
PROBE_INPUTS = ("server_ip", "secret_names", "secret_hashes")
PROBE_SCRIPT = """
import glob, hashlib, json, os, re, urllib.error, urllib.request
from kubeline import task

def call(url, token=None, body=None):
    headers = {"Authorization": "Bearer " + token} if token else {}
    data = None if body is None else json.dumps(body).encode()
    if data is not None:
        headers["Content-Type"] = "application/json"
    try:
        with urllib.request.urlopen(urllib.request.Request(url, data=data, headers=headers), timeout=5) as answer:
            return answer.status
    except urllib.error.HTTPError as exc:
        return exc.code
    except Exception as exc:  # no answer: refused, timed out, reset
        return f"{type(exc).__name__}: {exc}"[:120]

def environments():
    # This process's environment and every other one it can read in the pod (the stage's
    # runner, PID 1, runs as the same user).
    found = [dict(os.environ)]
    for path in glob.glob("/proc/[0-9]*/environ"):
        try:
            raw = open(path, "rb").read()
        except OSError:
            continue
        found.append(dict(item.decode(errors="replace").partition("=")[::2] for item in raw.split(b"\\0") if b"=" in item))
    return found

secret_names = set(json.loads(task.input("secret_names")))
secret_hashes = set(json.loads(task.input("secret_hashes")))
envs = environments()
token = next((env["KUBELINE_ATTEMPT_TOKEN"] for env in envs if env.get("KUBELINE_ATTEMPT_TOKEN")), None)
service = "http://kubeline.{ns}.svc.cluster.local"
pod = "http://" + task.input("server_ip")
print("environments:", [sorted(env) for env in envs], flush=True)
# Each output stays short: the PipelineRun status keeps 200 characters of each.
task.set_output("leaked_names", sorted({
    name for env in envs for name in env
    if name in secret_names or (re.search("PASSWORD|SECRET|TOKEN|DATABASE_URL", name) and name != "KUBELINE_ATTEMPT_TOKEN")}))
task.set_output("leaked_values", sorted({
    name for env in envs for name, value in env.items() if hashlib.sha256(value.encode()).hexdigest() in secret_hashes}))
task.set_output("environments_read", len(envs))
task.set_output("api_service", call(service + ":8080/api/v1/pipelines"))
task.set_output("api_service_attempt_token", call(service + ":8080/api/v1/pipelines", token))
task.set_output("api_pod", call(pod + ":8080/api/v1/pipelines"))
task.set_output("api_pod_attempt_token", call(pod + ":8080/api/v1/pipelines", token))
task.set_output("api_pod_scripts", call(pod + ":8080/api/v1/scripts", token, {"code": "print(1)"}))
task.set_output("healthz_service", call(service + ":8080/healthz"))
task.set_output("healthz_pod", call(pod + ":8080/healthz"))
task.set_output("upload_port_api", call(service + ":8081/api/v1/pipelines", token))
print("probe done", flush=True)
""".replace("{ns}", NS)
API_CALLS = ("api_service", "api_service_attempt_token", "api_pod", "api_pod_attempt_token", "api_pod_scripts")
PROBE_OUTPUTS = ("leaked_names", "leaked_values", "environments_read", *API_CALLS, "healthz_service", "healthz_pod",
                 "upload_port_api")
PROBE_PIPELINE = {
    "apiVersion": "kubeline.dev/v1", "kind": "Pipeline",
    "metadata": {"name": "e2e-probe", "namespace": NS},
    "spec": {
        "inputs": {name: {"type": "string"} for name in PROBE_INPUTS},
        "source": {"inline": {"probe.py": PROBE_SCRIPT}},
        "stages": [{"id": "probe", "type": "python", "file": "probe.py",
                    "inputMapping": {name: f"${{inputs.{name}}}" for name in PROBE_INPUTS}}],
        "outputs": [f"probe.{name}" for name in PROBE_OUTPUTS],
    },
}
# Names a stage must never see: the server's own secrets and credentials (the attempt token,
# KUBELINE_ATTEMPT_TOKEN, is the stage's own and opens the upload of that attempt only).
SERVER_SECRET_NAMES = ("POSTGRES_PASSWORD", "KUBELINE_SECRET_KEY", "KUBELINE_DATABASE_URL", "KUBELINE_TOKEN",
                       "KUBELINE_ADMIN_TOKEN", "KUBELINE_ADMIN_PASSWORD", "KUBELINE_SESSION_SECRET")


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _server_secret_values(kubectl: Kubectl) -> dict[str, str]:
    """Every value of the namespace's Opaque Secrets but the stages' own (kl-<attempt>), by
    secret/key: what the server may read (the database password, the Fernet key, tokens)."""
    found: dict[str, str] = {}
    for item in json.loads(kubectl("get", "secrets", "-n", NS, "-o", "json").stdout)["items"]:
        if item.get("type") != "Opaque" or item["metadata"]["name"].startswith("kl-"):
            continue
        for key, value in (item.get("data") or {}).items():
            found[f"{item['metadata']['name']}/{key}"] = base64.b64decode(value).decode(errors="replace")
    return found


@pytest.fixture(scope="module")
def probe_report(deployed: Cluster, kubectl: Kubectl) -> dict[str, Any]:
    """The probe pipeline run once as a PipelineRun of the deployed server: its outputs by name.
    It is given the names and the SHA-256 of the server's secret values, never a value."""
    kubectl("rollout", "status", "deployment/kubeline", "-n", NS, "--timeout=160s")
    server_pods = json.loads(kubectl("get", "pods", "-n", NS, "-l", "app.kubernetes.io/component=server",
                                     "-o", "json").stdout)["items"]
    live = [p for p in server_pods if not p["metadata"].get("deletionTimestamp") and p["status"].get("podIP")]
    assert live, f"no live server pod: {[p['metadata']['name'] for p in server_pods]}"
    server_ip = live[0]["status"]["podIP"]
    secrets_ = _server_secret_values(kubectl)
    assert any(key.endswith("/POSTGRES_PASSWORD") for key in secrets_), sorted(secrets_)
    hashes = sorted({_sha256(value) for value in secrets_.values() if value})
    kubectl("apply", "-f", "-", input=yaml.safe_dump(PROBE_PIPELINE))
    wait_until(lambda: "Ready" in kubectl("get", "klp", "e2e-probe", "-n", NS).stdout, timeout=60,
               what="Pipeline e2e-probe Ready")
    kubectl("apply", "-f", "-", input=yaml.safe_dump({
        "apiVersion": "kubeline.dev/v1", "kind": "PipelineRun",
        "metadata": {"name": "e2e-probe-1", "namespace": NS},
        "spec": {"pipelineRef": "e2e-probe", "timeout": 300,
                 "inputs": {"server_ip": server_ip, "secret_names": json.dumps(SERVER_SECRET_NAMES),
                            "secret_hashes": json.dumps(hashes)}}}))
    from kubeline import k8s

    client = k8s.PipelineClient(namespace=NS, kubeconfig=str(deployed.kubeconfig))
    try:
        status = client.wait_for_run("e2e-probe-1", timeout=300)
    finally:
        client.close()
    body = yaml.safe_load(kubectl("get", "klpr", "e2e-probe-1", "-n", NS, "-o", "yaml").stdout)
    if status.phase != "Succeeded":
        logs = kubectl("logs", "-n", NS, "-l", f"kubeline.dev/run={status.run_id}", "--tail=40", check=False)
        pytest.fail(f"the probe run ended {status.phase}: {body.get('status')}\n{logs.stdout}{logs.stderr}")
    report = {name: status.outputs.get(f"probe.{name}") for name in PROBE_OUTPUTS}
    missing = [name for name, value in report.items() if value is None]
    assert not missing, f"outputs {missing} did not arrive: {body.get('status')}"
    return {"run_id": status.run_id,
            **{name: json.loads(value) if isinstance(value, str) else value for name, value in report.items()}}


@pytest.mark.timeout(600)
def test_a_stage_pod_uploads_its_outputs_holds_no_server_secret_and_gets_401_from_the_api(
        probe_report: dict[str, Any], kubectl: Kubectl) -> None:
    # (a) The upload works: every output arrived, handed back on the upload port: the Job's pod was
    # given the upload listener's URL (8081), never the API port, and reads no Secret but its own.
    job = json.loads(kubectl("get", "jobs", "-n", NS, "-l", f"kubeline.dev/run={probe_report['run_id']}", "-o",
                             "json").stdout)["items"]
    assert len(job) == 1, job
    container = job[0]["spec"]["template"]["spec"]["containers"][0]
    pod_env = {e["name"]: e for e in container.get("env") or []}
    assert pod_env["KUBELINE_URL"]["value"].endswith(":8081"), pod_env["KUBELINE_URL"]
    assert not container.get("envFrom"), container.get("envFrom")
    refs = {(e.get("valueFrom") or {}).get("secretKeyRef", {}).get("name") for e in pod_env.values()} - {None}
    assert refs and all(ref.startswith("kl-") for ref in refs), refs

    # (b) No server secret in any environment the stage can read (its own, its runner's), by
    # name or by value.
    assert probe_report["environments_read"] >= 2, probe_report["environments_read"]
    assert probe_report["leaked_names"] == [], probe_report["leaked_names"]
    assert probe_report["leaked_values"] == [], probe_report["leaked_values"]

    # (c) The API answers a stage 401 whatever it presents (nothing, or its attempt token), or not
    # at all where the network plugin enforces the NetworkPolicy (next test); the upload listener
    # serves no API route.
    reached = isinstance(probe_report["healthz_pod"], int)  # the API port answers this pod at all
    for what in API_CALLS:
        answer = probe_report[what]
        assert answer == 401 or (not reached and isinstance(answer, str)), f"{what}: {answer}"
    assert probe_report["upload_port_api"] in (404, 405), probe_report["upload_port_api"]


@pytest.mark.timeout(600)
def test_a_stage_pod_cannot_reach_the_api_port(
        probe_report: dict[str, Any], api_client: Any, pods: Pods, namespace: str) -> None:
    if not network_policy_enforced(api_client, pods, namespace):
        reason = ("this cluster's network plugin does not enforce NetworkPolicy (a canary policy changed "
                  "nothing), so the kubeline-server policy cannot keep stage pods off the API port here; "
                  "what holds without it (401, no server secret in the stage) is tested beside")
        if os.environ.get("KUBELINE_REQUIRE_NETWORK_POLICY") == "1":
            pytest.fail(f"KUBELINE_REQUIRE_NETWORK_POLICY=1 but {reason}", pytrace=False)
        pytest.skip(reason)
    answered = {what: probe_report[what] for what in (*API_CALLS, "healthz_service", "healthz_pod")
                if isinstance(probe_report[what], int)}
    assert not answered, f"a stage pod got answers from the API port: {answered}"


@pytest.mark.timeout(300)
def test_a_pipeline_asking_for_the_local_executor_is_refused(deployed: Cluster, kubectl: Kubectl) -> None:
    kubectl("apply", "-f", "-", input=yaml.safe_dump({
        "apiVersion": "kubeline.dev/v1", "kind": "Pipeline",
        "metadata": {"name": "e2e-local", "namespace": NS},
        "spec": {"executor": "local", "source": {"inline": {"main.py": "print('in the server pod')\n"}},
                 "stages": [{"id": "main", "type": "python", "file": "main.py"}]}}))
    kubectl("apply", "-f", "-", input=yaml.safe_dump({
        "apiVersion": "kubeline.dev/v1", "kind": "PipelineRun",
        "metadata": {"name": "e2e-local-1", "namespace": NS}, "spec": {"pipelineRef": "e2e-local"}}))

    def conditions() -> str:
        texts = []
        for kind, name in (("klp", "e2e-local"), ("klpr", "e2e-local-1")):
            status = json.loads(kubectl("get", kind, name, "-n", NS, "-o", "json").stdout).get("status") or {}
            texts += [f"{kind} {c.get('type')}={c.get('status')} {c.get('reason')}: {c.get('message')}"
                      for c in status.get("conditions", [])]
            texts += [f"{kind} {key}: {status[key]}" for key in ("phase", "error") if status.get(key)]
        return "\n".join(texts)

    deadline = time.monotonic() + 90
    while "executor 'local'" not in (text := conditions()):
        if time.monotonic() > deadline:
            pytest.fail(f"no refusal naming executor 'local' after 90 s; the resources say:\n{text}")
        time.sleep(1)
    assert "which this server does not run" in text, text
    phase = kubectl("get", "klpr", "e2e-local-1", "-n", NS, "-o", "jsonpath={.status.phase}").stdout
    assert phase != "Succeeded", text
