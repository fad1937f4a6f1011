"""How the pool executor talks to a worker pod, and what a pod's status says.

Two roads, one API (``runtime.worker``): ``proxy`` goes through the API server's pod proxy
(``/api/v1/namespaces/NS/pods/NAME:PORT/proxy/...``) with the kubeconfig's credentials, so a
laptop needs nothing but a kubeconfig; ``pod-ip`` goes straight to the pod (a server in the
cluster). The API server drops ``Authorization`` before proxying, so the pool token travels in
its own header. Answers are small JSON documents; long polls are plain requests (the proxy
buffers streamed bodies), so both roads behave alike. Blocking calls run in a thread pool.
"""

from __future__ import annotations

import asyncio
import base64
import concurrent.futures
import dataclasses
import functools
import json
from typing import Any

import urllib3

from kubeline.executors.kubernetes import kube
from kubeline.runtime import worker

MAX_LINES = worker.MAX_LINES


class Unreachable(Exception):
    """The pod did not answer (connection refused or reset, the proxy could not reach it)."""


@dataclasses.dataclass(frozen=True)
class Answer:
    status: int
    body: dict[str, Any]


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


class PoolClient:
    def __init__(self, *, kube_: kube.Kube, connect: str) -> None:
        if connect not in ("proxy", "pod-ip"):
            raise ValueError(f"connect must be proxy or pod-ip, not {connect!r}")
        self.kube = kube_
        self.connect = connect
        self._direct = urllib3.PoolManager(maxsize=64, retries=False)
        self._threads = concurrent.futures.ThreadPoolExecutor(256, thread_name_prefix="kubeline-pool")

    async def call(self, pod: dict[str, Any], method: str, path: str, *, token: str,
                   body: Any = None, read_seconds: float = 30.0) -> Answer:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._threads, functools.partial(
            self._call, pod, method, path, token=token, body=body, timeout=read_seconds))

    def _call(self, pod: dict[str, Any], method: str, path: str, *, token: str, body: Any,
              timeout: float) -> Answer:
        data = json.dumps(body).encode() if body is not None else None
        headers = {worker.TOKEN_HEADER: token, "Content-Type": "application/json", "Accept": "application/json"}
        try:
            if self.connect == "pod-ip":
                ip = pod.get("status", {}).get("podIP")
                if not ip:
                    raise Unreachable("the pod has no IP yet")
                host = f"[{ip}]" if ":" in ip else ip
                response = self._direct.request(method, f"http://{host}:{worker.PORT}{path}", body=data,
                                                headers=headers, timeout=urllib3.Timeout(connect=5, read=timeout))
                status, raw = response.status, response.data
            else:
                status, raw = self._proxy(pod, method, path, data=data, headers=headers, timeout=timeout)
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            raise Unreachable(kube.describe(exc)) from None
        try:
            answer = json.loads(raw) if raw else {}
        except ValueError:
            answer = {"error": raw[:300].decode("utf-8", "replace")}
        if status in (401, 403) and answer.get("kind") == "Status":  # the API server's refusal, not the worker's
            return Answer(status=status, body={"error": (
                f"the Kubernetes API server refused the request to pool pod {pod['metadata']['name']} "
                f"({status}: {answer.get('message', '')}); this server's account needs pods/proxy in namespace "
                f"{pod['metadata']['namespace']} (deploy/rbac/worker-pool.yaml), or, in the cluster, "
                "KUBELINE_KUBERNETES_POOL_CONNECT=pod-ip")})
        if status in (502, 503) or (status == 404 and answer.get("kind") == "Status"):
            # the API server could not reach the pod, or the pod is gone: not the worker's answer
            raise Unreachable(f"{status}: {answer.get('message') or answer.get('error') or answer}")
        return Answer(status=status, body=answer)

    def _proxy(self, pod: dict[str, Any], method: str, path: str, *, data: bytes | None,
               headers: dict[str, str], timeout: float) -> tuple[int, bytes]:
        meta = pod["metadata"]
        api = self.kube.api
        resource = f"/api/v1/namespaces/{meta['namespace']}/pods/{meta['name']}:{worker.PORT}/proxy{path}"
        _, url, all_headers, _, _ = api.param_serialize(method=method, resource_path=resource.split("?", maxsplit=1)[0],
                                                        header_params=dict(headers), auth_settings=["BearerToken"])
        if "?" in resource:
            url += "?" + resource.split("?", 1)[1]
        pool = api.rest_client.pool_manager
        response = pool.request(method, url, body=data, headers=all_headers, preload_content=True,
                                timeout=urllib3.Timeout(connect=5, read=timeout), retries=False)
        return response.status, response.data

    def close(self) -> None:
        self._threads.shutdown(wait=False, cancel_futures=True)
        self._direct.clear()


def ready(pod: dict[str, Any]) -> bool:
    if pod["metadata"].get("deletionTimestamp") or not pod.get("status", {}).get("podIP"):
        return False
    return any(c.get("type") == "Ready" and c.get("status") == "True"
               for c in pod.get("status", {}).get("conditions") or [])


def restarts(pod: dict[str, Any]) -> int:
    return sum(int(s.get("restartCount", 0)) for s in pod.get("status", {}).get("containerStatuses") or [])


def last_termination(pod: dict[str, Any]) -> str:
    for status in pod.get("status", {}).get("containerStatuses") or []:
        ended = (status.get("lastState") or {}).get("terminated")
        if ended:
            return f"{ended.get('reason') or 'terminated'}, exit code {ended.get('exitCode')}"
    return "no reason given"


def not_ready_reason(pods: list[dict[str, Any]]) -> tuple[str, str]:
    """(reason, message) of the first pod the scheduler or kubelet holds back, else ``PodsStarting``."""
    if not pods:
        return "NoPods", "it has none yet (scaled to 0, or not created)"
    for pod in pods:
        for condition in pod.get("status", {}).get("conditions") or []:
            if condition.get("type") == "PodScheduled" and condition.get("status") == "False":
                return condition.get("reason") or "Unschedulable", condition.get("message", "")
        for status in pod.get("status", {}).get("initContainerStatuses") or []:  # the requirements' install
            state = status.get("state") or {}
            failed = (state.get("terminated") or {}).get("exitCode") or (
                (status.get("lastState") or {}).get("terminated") or {}).get("exitCode")
            if failed:
                return ("RequirementsFailed", f"installing the pool's requirements failed (exit {failed}): "
                        f"kubectl logs {pod['metadata'].get('name', '')} -c {status.get('name', '')}")
            waiting = state.get("waiting")
            if waiting and waiting.get("reason") not in (None, "PodInitializing"):
                return waiting["reason"], waiting.get("message") or ""
        for status in pod.get("status", {}).get("containerStatuses") or []:
            waiting = (status.get("state") or {}).get("waiting")
            if waiting and waiting.get("reason") not in (None, "ContainerCreating", "PodInitializing"):
                return waiting["reason"], waiting.get("message") or ""
    return "PodsStarting", "to become ready"


def why_not_ready(pool: str, pods: list[dict[str, Any]]) -> str:
    """Why no pod of ``pool`` can take an attempt, in words (the scheduler's or kubelet's reason)."""
    reason, message = not_ready_reason(pods)
    if reason == "NoPods":
        return f"waiting for a pod of worker pool {pool!r}: {message}"
    if reason == "PodsStarting":
        return f"waiting for a pod of worker pool {pool!r} {message}"
    return f"waiting for a pod of worker pool {pool!r}: {reason}: {message}".rstrip(": ")
