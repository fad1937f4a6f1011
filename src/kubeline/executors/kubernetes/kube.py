"""The one seam to the Kubernetes API: plain JSON dicts over the official client, off the loop.

Requests go through ``ApiClient.call_api`` with raw responses (no model (de)serialisation: the
manifests are dicts already, and parsing JSON is several times faster than building models).
Blocking calls run in a small thread pool of this object's own, so the event loop stays free and
a slow API server cannot starve the loop's default executor. Long-lived streams (watches, log
follows) use ``stream``, which the caller iterates in its own thread.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import functools
import json
import pathlib
import socket
from collections.abc import Iterator
from typing import Any

from kubernetes import client, config
from kubernetes.client import exceptions as k8s_errors

from kubeline.domain import errors

_PATHS = {
    "jobs": "/apis/batch/v1/namespaces/{namespace}/jobs",
    "pods": "/api/v1/namespaces/{namespace}/pods",
    "configmaps": "/api/v1/namespaces/{namespace}/configmaps",
    "secrets": "/api/v1/namespaces/{namespace}/secrets",
    "events": "/api/v1/namespaces/{namespace}/events",
}
ApiError = k8s_errors.ApiException


def load_client(kubeconfig: pathlib.Path | None = None, context: str | None = None) -> client.ApiClient:
    """In-cluster config when running in a pod (and no kubeconfig given), else a kubeconfig."""
    if kubeconfig is None:
        try:
            config.load_incluster_config()  # type: ignore[no-untyped-call]
            return client.ApiClient()
        except config.ConfigException:
            pass
    try:
        api: client.ApiClient = config.new_client_from_config(  # type: ignore[no-untyped-call]
            config_file=str(kubeconfig) if kubeconfig else None, context=context)
        return api
    except (config.ConfigException, OSError) as exc:
        raise errors.ExecutorError(
            f"cannot load a Kubernetes config ({exc}); set KUBELINE_KUBERNETES_KUBECONFIG to a "
            "kubeconfig file or run the server in a pod with a ServiceAccount") from None


class Kube:
    def __init__(self, api: client.ApiClient, *, workers: int = 16) -> None:
        self.api = api
        self._pool = concurrent.futures.ThreadPoolExecutor(workers, thread_name_prefix="kubeline-k8s")

    def path(self, kind: str, namespace: str, name: str | None = None) -> str:
        base = _PATHS[kind].format(namespace=namespace)
        return f"{base}/{name}" if name else base

    def _send(self, method: str, path: str, *, body: Any, query: list[tuple[str, Any]],
              headers: dict[str, str], timeout: Any) -> Any:
        method, url, headers, body, _ = self.api.param_serialize(
            method=method, resource_path=path, query_params=query, header_params=headers, body=body,
            auth_settings=["BearerToken"])
        response = self.api.call_api(method, url, header_params=headers, body=body,
                                     _request_timeout=timeout)
        if not 200 <= response.status < 300:
            data = response.read()  # type: ignore[no-untyped-call]
            raise ApiError(status=response.status, reason=response.reason,
                           body=data.decode("utf-8", "replace") if data else None)
        return response

    def request(self, method: str, path: str, *, body: Any = None,
                query: list[tuple[str, Any]] | None = None,
                content_type: str = "application/json") -> dict[str, Any]:
        """One blocking request; the decoded JSON answer. Raises ``ApiError``."""
        response = self._send(method, path, body=body, query=query or [], timeout=(10, 120),
                              headers={"Accept": "application/json", "Content-Type": content_type})
        data = response.read()
        answer: dict[str, Any] = json.loads(data) if data else {}
        return answer

    def stream(self, path: str, *, query: list[tuple[str, Any]], read_timeout: float | None = None) -> Any:
        """An open streaming response (watch or log follow): a urllib3 response to read lines
        from with ``iter_lines`` and then ``release_conn``."""
        response = self._send("GET", path, body=None, query=query, headers={"Accept": "*/*"},
                              timeout=(10, read_timeout) if read_timeout else None)
        return response.response

    async def call(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, functools.partial(self.request, method, path, **kwargs))

    async def create(self, kind: str, namespace: str, body: Any) -> dict[str, Any]:
        return await self.call("POST", self.path(kind, namespace), body=body)

    async def read(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            return await self.call("GET", self.path(kind, namespace, name))
        except ApiError as exc:
            if exc.status == 404:
                return None
            raise

    async def patch(self, kind: str, namespace: str, name: str, body: Any) -> dict[str, Any]:
        return await self.call("PATCH", self.path(kind, namespace, name), body=body,
                               content_type="application/merge-patch+json")

    async def delete(self, kind: str, namespace: str, name: str, *, propagation: str = "Foreground") -> bool:
        """Delete; False when it was already gone."""
        try:
            await self.call("DELETE", self.path(kind, namespace, name),
                            body={"propagationPolicy": propagation})
        except ApiError as exc:
            if exc.status == 404:
                return False
            raise
        return True

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
        self.api.close()  # type: ignore[no-untyped-call]


def iter_line_batches(response: Any, *, whole_lines: bool = False) -> Iterator[list[bytes]]:
    """The whole lines (without newlines) of each chunk of a streaming response, as it arrives;
    at the end, what follows the last newline too, unless ``whole_lines`` (a stream known to end
    each line with a newline, where that is the cut-off part of a line)."""
    pending = b""
    for chunk in response.stream(64 * 1024, decode_content=False):
        pending += chunk
        if b"\n" not in pending:
            continue
        *complete, pending = pending.split(b"\n")
        yield complete
    if pending and not whole_lines:
        yield [pending]


def iter_lines(response: Any) -> Iterator[bytes]:
    for batch in iter_line_batches(response):
        yield from batch


def abort(response: Any) -> None:
    """Unblock a thread reading ``response``: shut its socket down (``close`` would wait for the
    reader's lock, i.e. until the next line or the read timeout)."""
    sock = getattr(getattr(response, "connection", None), "sock", None)
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)


def describe(exc: BaseException) -> str:
    """An API error as one sentence (status, reason and the server's message)."""
    if isinstance(exc, ApiError):
        message = ""
        try:
            message = json.loads(exc.body or b"{}").get("message", "")
        except (ValueError, AttributeError):
            message = str(exc.body or "")[:300]
        return f"{exc.status} {exc.reason}: {message}".strip()
    reason = getattr(exc, "reason", None)  # urllib3's MaxRetryError: say what failed, not the URL
    if isinstance(reason, Exception):
        text = str(reason)
        return text.rpartition("] ")[2].rstrip("')\"") if "] " in text else f"{reason.__class__.__name__}: {text}"
    return f"{exc.__class__.__name__}: {exc}"
