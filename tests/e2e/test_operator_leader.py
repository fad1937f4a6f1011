"""Two operator replicas with the real Lease on the local cluster: one acts; when its pod is
killed, the other takes the Lease within the lease time (plus one retry interval: 15 + 2 s; the
assertion allows 8 s more for a loaded machine: CI saw 22.2 s) and every PipelineRun (those created
before the kill and those during the takeover) runs exactly once.

The dev overlay is rendered with `kubectl kustomize`, moved into a namespace of this module's
own (so it never meets test_operator_deploy's kubeline-dev), with two server replicas and no
HPA; the replicas share their data dir (pipeline folders made from Pipeline resources) as the
base's kubeline-data PVC makes them do, here through a hostPath on the one node (the dev overlay's
emptyDir is for its single replica: a replica without the folder would fail the runs it claims).
The leader is killed twice: its pod deleted with `kubectl delete pod --grace-period=0
--force`, as a user would (SIGTERM: it may hand the Lease back on its way out), then the next
leader's process SIGKILLed from the host (a crash: the Lease must expire). PipelineRuns are
created before each kill and right after it, while no replica may act yet.
"Exactly once" is read from the cluster, not from Kubeline's own word: each PipelineRun's
status names a distinct run, and the Jobs of the pipeline (one python stage per run) carry
exactly that many distinct run labels.

Needs the images kubeline-server:dev and kubeline-postgres:dev and the worker image (built by the
e2e conftest when missing or stale, like for test_operator_deploy).
"""

from __future__ import annotations

import contextlib
import json
import os
import pathlib
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import yaml

from kubeline.operator import runner

from .support import Cluster, wait_until

REPO = pathlib.Path(__file__).resolve().parents[2]
Kubectl = Callable[..., subprocess.CompletedProcess[str]]
LEASE_SECONDS = 15  # leader.LeaderElection's default, which the server uses
RETRY_SECONDS = 2


def _manifests(kubectl: Kubectl, namespace: str, *, data_dir: pathlib.Path) -> str:
    docs = [d for d in yaml.safe_load_all(kubectl("kustomize", str(REPO / "deploy" / "overlays" / "dev")).stdout) if d]
    kept = []
    for doc in docs:
        if doc["kind"] == "HorizontalPodAutoscaler":
            continue  # two replicas, whatever the load
        if doc["kind"] == "Namespace":
            doc["metadata"]["name"] = namespace
        elif doc["kind"] != "CustomResourceDefinition":
            doc["metadata"]["namespace"] = namespace
        if doc["kind"] == "Deployment" and doc["metadata"]["name"] == "kubeline":
            doc["spec"]["replicas"] = 2
            for volume in doc["spec"]["template"]["spec"]["volumes"]:
                if volume["name"] == "data":  # shared by the replicas, as base's kubeline-data PVC is
                    volume.pop("emptyDir", None)
                    volume["hostPath"] = {"path": str(data_dir), "type": "Directory"}
        if doc["kind"] == "RoleBinding":
            for subject in doc.get("subjects", []):
                if subject.get("namespace"):
                    subject["namespace"] = namespace
        kept.append(doc)
    return yaml.safe_dump_all(kept)


@pytest.fixture(scope="module")
def two_replicas(deploy_images: Cluster, kubectl: Kubectl) -> Iterator[str]:
    namespace = f"e2e-leader-{secrets.token_hex(3)}"
    data_dir = pathlib.Path(tempfile.mkdtemp(prefix=f"kubeline-{namespace}-"))
    os.chown(data_dir, 1000, 1000)  # the server's uid (a hostPath gets no fsGroup)
    kubectl("apply", "-f", "-", input=_manifests(kubectl, namespace, data_dir=data_dir))
    try:
        yield namespace
    finally:
        kubectl("delete", "pipelineruns.kubeline.dev", "--all", "-n", namespace, "--timeout=60s", check=False)
        kubectl("delete", "deployment", "kubeline", "-n", namespace, "--wait=false", check=False)
        deadline = time.monotonic() + 120  # the servers stop writing to the data dir first
        while time.monotonic() < deadline and _server_pods(kubectl, namespace, all_=True):
            time.sleep(1)
        shutil.rmtree(data_dir, ignore_errors=True)
        # with no operator left to put it back, the Pipeline's finalizer would hold the namespace forever
        for name in kubectl("get", "pipelines.kubeline.dev", "-n", namespace, "-o", "name", check=False).stdout.split():
            kubectl("patch", name, "-n", namespace, "--type=merge", "-p", '{"metadata":{"finalizers":[]}}', check=False)
        kubectl("delete", "namespace", namespace, "--wait=false", check=False)


def _pipeline(namespace: str) -> str:
    return f"""
apiVersion: kubeline.dev/v1
kind: Pipeline
metadata: {{name: leader-e2e, namespace: {namespace}}}
spec:
  source:
    inline:
      main.py: |
        print("one run", flush=True)
  stages:
    - {{id: only, type: python, file: main.py}}
"""


def _run(namespace: str, name: str) -> str:
    return f"""
apiVersion: kubeline.dev/v1
kind: PipelineRun
metadata: {{name: {name}, namespace: {namespace}}}
spec: {{pipelineRef: leader-e2e, timeout: 600}}
"""


def _holder(kubectl: Kubectl, namespace: str) -> str:
    proc = kubectl("get", "lease", runner.LEASE_NAME, "-n", namespace, "-o", "jsonpath={.spec.holderIdentity}",
                   check=False)
    return proc.stdout.strip() if proc.returncode == 0 else ""


def _server_pods(kubectl: Kubectl, namespace: str, *, all_: bool = False) -> list[dict[str, Any]]:
    """The server pods (without those being deleted, unless ``all_``)."""
    proc = kubectl("get", "pods", "-n", namespace, "-l", "app.kubernetes.io/component=server", "-o", "json",
                   check=False)
    items: list[dict[str, Any]] = json.loads(proc.stdout)["items"] if proc.returncode == 0 else []
    return [p for p in items if all_ or not p["metadata"].get("deletionTimestamp")]


def _ready(pod: dict[str, Any]) -> bool:
    return any(c.get("type") == "Ready" and c.get("status") == "True"
               for c in pod.get("status", {}).get("conditions") or [])


def _statuses(kubectl: Kubectl, namespace: str) -> dict[str, dict[str, Any]]:
    body = json.loads(kubectl("get", "pipelineruns.kubeline.dev", "-n", namespace, "-o", "json").stdout)
    return {item["metadata"]["name"]: item.get("status") or {} for item in body["items"]}


def _kill_hard(pod_uid: str) -> int:
    """SIGKILL the kubeline processes of a pod from the host (the local cluster runs here, as
    root): a crash, so the Lease is not released and must expire."""
    killed = 0
    for proc in pathlib.Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cgroup, cmdline = (proc / "cgroup").read_text(), (proc / "cmdline").read_bytes()
        except OSError:
            continue
        if f"pod{pod_uid}" in cgroup and b"kubeline" in cmdline:
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(proc.name), signal.SIGKILL)
                killed += 1
    return killed


def _create_runs(kubectl: Kubectl, namespace: str, prefix: str) -> list[str]:
    names = [f"{prefix}-{i}" for i in range(3)]
    for name in names:
        kubectl("apply", "-f", "-", input=_run(namespace, name))
    return names


def _new_holder(kubectl: Kubectl, namespace: str, old: str, *, since: float) -> tuple[str, float]:
    holder = wait_until(lambda: (h := _holder(kubectl, namespace)) and h != old and h,
                        timeout=LEASE_SECONDS * 3, interval=0.2, what=f"another replica to take the Lease from {old}")
    return holder, time.monotonic() - since


@pytest.mark.timeout(900)
def test_killing_the_leader_hands_over_within_the_lease_time_and_runs_each_pipelinerun_once(
        two_replicas: str, kubectl: Kubectl) -> None:
    namespace = two_replicas
    wait_until(lambda: kubectl("rollout", "status", "statefulset/kubeline-postgres", "-n", namespace,
                               "--timeout=60s", check=False).returncode == 0, timeout=300, interval=1,
               what="PostgreSQL ready")
    wait_until(lambda: len([p for p in _server_pods(kubectl, namespace) if _ready(p)]) == 2, timeout=300,
               interval=1, what="two server replicas ready")
    holder = wait_until(lambda: _holder(kubectl, namespace), timeout=60, what="a Lease holder")
    pods = {p["metadata"]["name"] for p in _server_pods(kubectl, namespace)}
    leader = next(name for name in pods if holder.startswith(name + "-"))

    kubectl("apply", "-f", "-", input=_pipeline(namespace))
    names = _create_runs(kubectl, namespace, "before")
    wait_until(lambda: all(_statuses(kubectl, namespace).get(n, {}).get("runId") for n in names), timeout=120,
               what="the leader to turn the first PipelineRuns into runs")

    # 1. the leader pod deleted as a user would (SIGTERM: it may release the Lease on its way out)
    killed_at = time.monotonic()
    kubectl("delete", "pod", leader, "-n", namespace, "--grace-period=0", "--force", "--wait=false")
    names += _create_runs(kubectl, namespace, "deleted")  # while nobody may act yet
    holder, took = _new_holder(kubectl, namespace, holder, since=killed_at)
    assert not holder.startswith(leader + "-")
    assert took <= LEASE_SECONDS + 2 * RETRY_SECONDS + 8, f"takeover took {took:.1f}s (lease {LEASE_SECONDS}s)"
    print(f"pod deleted: {holder} took the Lease after {took:.1f}s")  # shown with -rP

    # 2. the new leader crashes (SIGKILL from the host): nothing releases the Lease, it must expire
    acting = next(p for p in _server_pods(kubectl, namespace) if holder.startswith(p["metadata"]["name"] + "-"))
    killed_at = time.monotonic()
    assert _kill_hard(acting["metadata"]["uid"]) >= 1
    names += _create_runs(kubectl, namespace, "crashed")
    holder_after, took = _new_holder(kubectl, namespace, holder, since=killed_at)
    # the standby takes a Lease it saw unchanged for lease_seconds (own clock), looking every retry_seconds
    assert took <= LEASE_SECONDS + 2 * RETRY_SECONDS + 8, f"takeover after a crash took {took:.1f}s"
    print(f"process killed: {holder_after} took the Lease after {took:.1f}s")  # shown with -rP

    final = wait_until(
        lambda: (s := _statuses(kubectl, namespace)) and all(s.get(n, {}).get("phase") in ("Succeeded", "Failed")
                                                             for n in names) and s,
        timeout=480, interval=1, what="every PipelineRun finished")
    failed = {n: [c.get("message") for c in final[n].get("conditions") or []]
              for n in names if final[n].get("phase") != "Succeeded"}
    assert not failed, failed
    run_ids = [final[n]["runId"] for n in names]
    assert len(set(run_ids)) == len(names), run_ids
    jobs = json.loads(kubectl("get", "jobs", "-n", namespace, "-l", "kubeline.dev/pipeline=leader-e2e",
                              "-o", "json").stdout)["items"]
    labelled = {job["metadata"]["labels"]["kubeline.dev/run"] for job in jobs}
    assert labelled == set(run_ids), f"runs with Jobs {sorted(labelled)} != PipelineRuns' runs {sorted(run_ids)}"
    transitions = kubectl("get", "lease", runner.LEASE_NAME, "-n", namespace,
                          "-o", "jsonpath={.spec.leaseTransitions}").stdout.strip()
    assert int(transitions or 0) >= 1, holder_after
