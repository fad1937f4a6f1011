"""metrics.k8s.io: PodMetrics parsing, soft-limit warnings, and the "unavailable" path against a
real HTTP server on 127.0.0.1 playing the API server (with and without the metrics API).

This server is a STUB of metrics.k8s.io (nothing real can serve that API here: no
metrics-server); the e2e on the local cluster checks only the "unavailable" path."""

from __future__ import annotations

import http.server
import json
from collections.abc import Iterator
from typing import Any

import pytest
from kubernetes import client

from kubeline import testing
from kubeline.executors.kubernetes import executor as k8s_executor
from kubeline.executors.kubernetes import kube, manifests, metrics


def _pod_metrics(*usages: tuple[str, str]) -> dict[str, Any]:
    return {"kind": "PodMetrics", "apiVersion": "metrics.k8s.io/v1beta1",
            "metadata": {"name": "kl-x-abcde", "namespace": "ns"}, "timestamp": "2025-01-01T00:00:00Z",
            "window": "30s", "containers": [{"name": f"c{i}", "usage": {"cpu": cpu, "memory": memory}}
                                            for i, (cpu, memory) in enumerate(usages)]}


def test_pod_metrics_quantities_are_summed_over_containers() -> None:
    usage = metrics.parse_pod_metrics(_pod_metrics(("12345n", "1024Ki"), ("5m", "2Mi")), now=7.0)
    assert usage.cpu_cores == pytest.approx(0.000012345 + 0.005)
    assert usage.memory_bytes == 1024 * 1024 + 2 * 2**20
    assert usage.peak_memory_bytes == usage.memory_bytes
    assert usage.at == 7.0
    plain = metrics.parse_pod_metrics(_pod_metrics(("1", "123456")))
    assert (plain.cpu_cores, plain.memory_bytes) == (1.0, 123456)
    assert metrics.parse_pod_metrics(_pod_metrics(("250000000n", "1Gi"))).cpu_cores == 0.25


def test_peak_memory_is_kept_across_samples() -> None:
    first = metrics.parse_pod_metrics(_pod_metrics(("1m", "100Mi")))
    second = first.with_sample(metrics.parse_pod_metrics(_pod_metrics(("2m", "40Mi"))))
    assert (second.memory_bytes, second.peak_memory_bytes, second.cpu_cores) == (40 * 2**20, 100 * 2**20, 0.002)


@pytest.mark.parametrize("body", [{}, {"containers": "x"}, _pod_metrics(("lots", "1Ki")), _pod_metrics(("1m", "?"))])
def test_malformed_pod_metrics_are_refused(body: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match=r"quantity|containers"):
        metrics.parse_pod_metrics(body)


def test_report_and_preferred_version() -> None:
    assert metrics.report(None, reason=metrics.NO_API) == {
        "available": False, "reason": "metrics unavailable: the cluster has no metrics.k8s.io API",
        "cpu_cores": None, "memory_bytes": None, "peak_memory_bytes": None}
    usage = metrics.Usage(cpu_cores=0.5, memory_bytes=10, peak_memory_bytes=20, at=0.0)
    assert metrics.report(usage, reason="x") == {"available": True, "reason": "", "cpu_cores": 0.5,
                                                 "memory_bytes": 10, "peak_memory_bytes": 20}
    assert metrics.preferred_version({"preferredVersion": {"groupVersion": "metrics.k8s.io/v1beta1"}}) \
        == "metrics.k8s.io/v1beta1"
    assert metrics.preferred_version({"versions": [{"groupVersion": "metrics.k8s.io/v1"}]}) == "metrics.k8s.io/v1"
    assert metrics.preferred_version({}) is None


def test_soft_limits_warn_once_each() -> None:
    handle = {"soft_memory": "64Mi", "soft_cpu": "500m"}
    already: set[str] = set()
    low = metrics.Usage(cpu_cores=0.1, memory_bytes=10 * 2**20, peak_memory_bytes=10 * 2**20, at=0.0)
    assert metrics.soft_limit_warnings(handle, low, already=already) == []
    high = metrics.Usage(cpu_cores=0.9, memory_bytes=100 * 2**20, peak_memory_bytes=100 * 2**20, at=0.0)
    warnings = metrics.soft_limit_warnings(handle, high, already=already)
    assert warnings == ["memory use 100Mi is above the soft limit 64Mi",
                        "CPU use 0.90 cores is above the soft limit 500m"]
    assert metrics.soft_limit_warnings(handle, high, already=already) == []
    assert metrics.soft_limit_warnings({}, high, already=set()) == []


class _FakeApiServer(http.server.BaseHTTPRequestHandler):
    """Answers like an API server with (``with_metrics``) or without metrics-server."""

    with_metrics = False
    requests: list[str] = []  # per handler class, made fresh by the fixture

    def do_GET(self) -> None:
        type(self).requests.append(self.path)
        if self.path == "/apis/metrics.k8s.io" and self.with_metrics:
            self._answer(200, {"kind": "APIGroup", "name": "metrics.k8s.io", "preferredVersion": {
                "groupVersion": "metrics.k8s.io/v1beta1", "version": "v1beta1"}})
        elif self.path.startswith("/apis/metrics.k8s.io/v1beta1/namespaces/ns/pods/") and self.with_metrics:
            self._answer(200, _pod_metrics(("20m", "30Mi")))
        elif self.path.startswith("/api/v1/namespaces/ns/pods?") and self.with_metrics:
            self._answer(200, {"items": [{"metadata": {"name": "kl-a1-xyz"}, "status": {
                "containerStatuses": [{"name": manifests.CONTAINER, "state": {"running": {}}}]}}]})
        else:
            self._answer(404, {"kind": "Status", "message": "the server could not find the requested resource"})

    def _answer(self, status: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def api_server() -> Iterator[tuple[str, type[_FakeApiServer]]]:
    with testing.http_server(_FakeApiServer, requests=[]) as served:
        yield served


def _executor(url: str) -> k8s_executor.KubernetesExecutor:
    configuration = client.Configuration()
    configuration.host = url
    return k8s_executor.KubernetesExecutor(kube_=kube.Kube(client.ApiClient(configuration)),
                                           defaults=manifests.Defaults(), attempts=None)


async def test_without_the_metrics_api_usage_is_unavailable_and_nothing_fails(
        api_server: tuple[str, type[_FakeApiServer]]) -> None:
    url, handler = api_server
    executor = _executor(url)
    try:
        handle = {"attempt_id": "A1", "namespace": "ns", "job": "kl-a1"}
        answer = await executor.resource_usage(handle, running=True)
        assert answer["available"] is False
        assert answer["reason"] == metrics.NO_API
        assert executor.capabilities.resource_metrics is False
        await executor.resource_usage(handle, running=True)
        assert handler.requests == ["/apis/metrics.k8s.io"]  # discovered once, not per question
    finally:
        await executor.close()


async def test_with_the_metrics_api_a_running_pod_reports_usage(
        api_server: tuple[str, type[_FakeApiServer]]) -> None:
    url, handler = api_server
    handler.with_metrics = True
    executor = _executor(url)
    try:
        handle = {"attempt_id": "A1", "namespace": "ns", "job": "kl-a1"}
        answer = await executor.resource_usage(handle, running=True)
        assert answer == {"available": True, "reason": "", "cpu_cores": 0.02, "memory_bytes": 30 * 2**20,
                          "peak_memory_bytes": 30 * 2**20}
        assert executor.capabilities.resource_metrics is True
        assert handler.requests[-1] == "/apis/metrics.k8s.io/v1beta1/namespaces/ns/pods/kl-a1-xyz"
        finished = await executor.resource_usage(handle, running=False)
        assert finished == {**metrics.report(None, reason=metrics.NOT_RUNNING)}
    finally:
        await executor.close()
