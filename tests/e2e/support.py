"""Helpers for the e2e tests: waiting, and running small Python programs in pods."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest


@dataclass
class Cluster:
    """How the tests reach the cluster; `local` is True for scripts/local-cluster's own."""

    kubeconfig: Path | None = None
    local: bool = False
    unavailable: str | None = None
    image_problem: str | None = None
    deploy_image_problem: str | None = None
    deploy_images_checked: bool = False
    notes: list[str] = field(default_factory=list)

    def env(self) -> dict[str, str]:
        assert self.kubeconfig is not None
        return {**os.environ, "KUBECONFIG": str(self.kubeconfig)}


def exists(read: Callable[[], object]) -> bool:
    from kubernetes.client.exceptions import ApiException

    try:
        read()
    except ApiException as exc:
        if exc.status == 404:
            return False
        raise
    return True


def wait_until(predicate: Callable[[], object], *, timeout: float, what: str, interval: float = 0.25) -> Any:
    """Poll until predicate() is truthy and return its value; fail naming `what` after timeout."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            pytest.fail(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


@dataclass
class PodResult:
    phase: str
    logs: str


class Pods:
    """Runs short Python programs in pods of the worker image, as non-root hardened Jobs will."""

    def __init__(self, api_client: Any, image: str) -> None:
        from kubernetes import client

        self._client = client
        self.core = client.CoreV1Api(api_client)
        self.image = image

    def manifest(
        self,
        *,
        name: str,
        code: str,
        labels: dict[str, str] | None = None,
        service_account: str | None = None,
        port: int | None = None,
        hostname: str | None = None,
        subdomain: str | None = None,
    ) -> Any:
        c = self._client
        return c.V1Pod(
            metadata=c.V1ObjectMeta(name=name, labels=labels or {}),
            spec=c.V1PodSpec(
                restart_policy="Never",
                service_account_name=service_account,
                hostname=hostname,
                subdomain=subdomain,
                termination_grace_period_seconds=0,
                security_context=c.V1PodSecurityContext(run_as_non_root=True, run_as_user=1000, run_as_group=1000),
                containers=[
                    c.V1Container(
                        name="main",
                        image=self.image,
                        image_pull_policy="IfNotPresent",
                        command=["python3", "-c", code],
                        ports=[c.V1ContainerPort(container_port=port)] if port else None,
                        security_context=c.V1SecurityContext(
                            allow_privilege_escalation=False,
                            capabilities=c.V1Capabilities(drop=["ALL"]),
                        ),
                    )
                ],
            ),
        )

    def start(self, namespace: str, **manifest: Any) -> str:
        pod = self.core.create_namespaced_pod(namespace, self.manifest(**manifest))
        return str(pod.metadata.name)

    def wait_running(self, namespace: str, name: str, *, timeout: float = 60) -> Any:
        def ready() -> Any:
            pod = self.core.read_namespaced_pod(name, namespace)
            if pod.status.phase in ("Failed", "Succeeded"):
                pytest.fail(f"pod {namespace}/{name} ended early: {self.logs(namespace, name)}")
            statuses = pod.status.container_statuses or []
            return pod if statuses and all(s.ready for s in statuses) else None

        return wait_until(ready, timeout=timeout, what=f"pod {namespace}/{name} running")

    def logs(self, namespace: str, name: str) -> str:
        return str(self.core.read_namespaced_pod_log(name, namespace))

    def run(self, namespace: str, *, timeout: float = 90, **manifest: Any) -> PodResult:
        """Create the pod, wait until it ends, return its phase and logs."""
        name = self.start(namespace, **manifest)

        def ended() -> str | None:
            phase = self.core.read_namespaced_pod(name, namespace).status.phase
            return phase if phase in ("Succeeded", "Failed") else None

        phase = wait_until(ended, timeout=timeout, what=f"pod {namespace}/{name} to finish")
        return PodResult(phase=phase, logs=self.logs(namespace, name))


CANARY_SERVER = """
import http.server, threading
class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200); self.end_headers(); self.wfile.write(b"ok")
    def log_message(self, *args):
        pass
servers = [http.server.ThreadingHTTPServer(("0.0.0.0", port), Handler) for port in (8000, 8001)]
for server in servers[1:]:
    threading.Thread(target=server.serve_forever, daemon=True).start()
print("serving", flush=True)
servers[0].serve_forever()
"""

CANARY_CLIENT = """
import json, sys, urllib.request
def reach(port):
    try:
        return urllib.request.urlopen(f"http://{sys.argv[1]}:{port}/", timeout=4).status == 200
    except Exception:
        return False
print(json.dumps({"allowed": reach(8000), "denied": reach(8001)}))
"""


def network_policy_enforced(api_client: Any, pods: Pods, namespace: str) -> bool:
    """Whether the cluster's network plugin enforces NetworkPolicy (a bridge CNI, as the local
    cluster's, does not: the objects are accepted and change nothing). A canary: a server pod on
    ports 8000 and 8001 under a policy that admits 8000 only; a client pod calls both. 8000 must
    answer (else the probe proves nothing and the test fails); 8001 answering means the policy
    is not enforced."""
    from kubernetes import client

    labels = {"app.kubernetes.io/name": "netpol-canary"}
    client.NetworkingV1Api(api_client).create_namespaced_network_policy(namespace, client.V1NetworkPolicy(
        metadata=client.V1ObjectMeta(name="netpol-canary"),
        spec=client.V1NetworkPolicySpec(
            pod_selector=client.V1LabelSelector(match_labels=labels), policy_types=["Ingress"],
            ingress=[client.V1NetworkPolicyIngressRule(ports=[client.V1NetworkPolicyPort(port=8000, protocol="TCP")])])))
    server = pods.start(namespace, name="netpol-canary-server", code=CANARY_SERVER, labels=labels, port=8000)
    ip = pods.wait_running(namespace, server).status.pod_ip
    deadline = time.monotonic() + 10  # a plugin that enforces may take a moment to program the policy
    while True:
        name = f"netpol-canary-client-{int(time.monotonic() * 1000) % 100000}"
        code = CANARY_CLIENT.replace("sys.argv[1]", repr(ip))
        result = pods.run(namespace, name=name, code=code, timeout=60)
        answer = json.loads(result.logs.strip().splitlines()[-1]) if result.phase == "Succeeded" else {}
        if not answer.get("allowed"):
            pytest.fail(f"the NetworkPolicy canary's open port 8000 did not answer ({result.phase}): {result.logs}")
        if not answer["denied"] or time.monotonic() >= deadline:
            return not answer["denied"]
        time.sleep(2)
