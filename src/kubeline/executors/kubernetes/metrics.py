"""CPU and memory of running attempts from the cluster's ``metrics.k8s.io`` API, when it has one.

Clusters without metrics-server (the local test cluster, many dev clusters) have no such API:
then every attempt reports ``available: False`` with a reason a user understands, and nothing
else changes. When the API exists, the executor polls the PodMetrics of each running attempt's
pod (one GET per pod and interval: the executor Role may ``get`` PodMetrics, not list them),
keeps the latest sample and the peak memory in memory (``Usage``), and warns once in the
attempt's log when a soft limit is exceeded. Usage is reported in the units the API speaks of:
cores (``cpu_cores``) and bytes (``memory_bytes``), summed over the pod's containers.

Verified against a stub only: nothing on the test machine can serve ``metrics.k8s.io`` (no
metrics-server image or source is installable from the registries it reaches), so the path with
the API is tested against a small HTTP server on 127.0.0.1 that answers like the API server
with the PodMetrics shape of the documented API (tests/unit/executors_k8s/test_k8s_metrics.py);
the local cluster e2e covers only the "no metrics API" path.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any

from kubeline.domain import quantities
from kubeline.executors.kubernetes import kube

GROUP = "metrics.k8s.io"
NO_API = "metrics unavailable: the cluster has no metrics.k8s.io API"
NOT_RUNNING = "metrics unavailable: the attempt's pod is not running"
NO_SAMPLE = "metrics unavailable: no sample of the pod yet (metrics-server samples every ~15 s)"


@dataclasses.dataclass(frozen=True, kw_only=True)
class Usage:
    """The latest sample of one attempt's pod, and the highest memory seen."""

    cpu_cores: float
    memory_bytes: int
    peak_memory_bytes: int
    at: float  # when Kubeline took the sample (epoch seconds)

    def with_sample(self, sample: Usage) -> Usage:
        return dataclasses.replace(sample, peak_memory_bytes=max(self.peak_memory_bytes,
                                                                 sample.peak_memory_bytes))


def report(usage: Usage | None, *, reason: str) -> dict[str, Any]:
    """The API's ``resources`` object: numbers when there is a sample, else why there are none."""
    if usage is None:
        return {"available": False, "reason": reason, "cpu_cores": None, "memory_bytes": None,
                "peak_memory_bytes": None}
    return {"available": True, "reason": "", "cpu_cores": usage.cpu_cores,
            "memory_bytes": usage.memory_bytes, "peak_memory_bytes": usage.peak_memory_bytes}


def parse_pod_metrics(body: dict[str, Any], *, now: float | None = None) -> Usage:
    """A ``PodMetrics`` object -> ``Usage`` (containers summed). ``ValueError`` when malformed.

    Quantities come as the API writes them: cpu ``"12345n"`` (nanocores), ``"5m"``, ``"1"``;
    memory ``"1024Ki"``, ``"12Mi"``, ``"123456"``.
    """
    containers = body.get("containers")
    if not isinstance(containers, list):
        raise ValueError("PodMetrics without a containers list")
    cpu = 0.0
    memory = 0
    for container in containers:
        usage = (container or {}).get("usage") or {}
        cpu += float(quantities.parse(usage.get("cpu", "0")))
        memory += int(quantities.parse(usage.get("memory", "0")))
    return Usage(cpu_cores=round(cpu, 9), memory_bytes=memory, peak_memory_bytes=memory,
                 at=time.time() if now is None else now)


def preferred_version(discovery: dict[str, Any]) -> str | None:
    """The group version to use from the ``/apis/metrics.k8s.io`` discovery document."""
    preferred = (discovery.get("preferredVersion") or {}).get("groupVersion")
    if preferred:
        return str(preferred)
    versions = discovery.get("versions") or []
    return str(versions[0]["groupVersion"]) if versions else None


class Metrics:
    """Discovers the API once (re-checked every ``recheck`` seconds while absent) and reads
    PodMetrics."""

    def __init__(self, kube_: kube.Kube, *, recheck: float = 300.0) -> None:
        self.kube = kube_
        self.recheck = recheck
        self.version: str | None = None
        self._checked_at: float | None = None

    async def available(self) -> bool:
        now = time.monotonic()
        if self.version is not None:
            return True
        if self._checked_at is not None and now - self._checked_at < self.recheck:
            return False
        self._checked_at = now
        try:
            self.version = preferred_version(await self.kube.call("GET", f"/apis/{GROUP}"))
        except Exception:  # 404 (no metrics-server), 403, a flaky API server: absent, never a failure
            self.version = None
        return self.version is not None

    async def pod(self, namespace: str, pod: str) -> Usage | None:
        """The pod's current usage; None when metrics-server has no sample of it (yet)."""
        if self.version is None:
            return None
        try:
            body = await self.kube.call("GET", f"/apis/{self.version}/namespaces/{namespace}/pods/{pod}")
            return parse_pod_metrics(body)
        except (kube.ApiError, ValueError):
            return None


def soft_limit_warnings(handle: dict[str, Any], usage: Usage, *, already: set[str]) -> list[str]:
    """One warning per soft limit the first time a sample exceeds it (never a kill)."""
    found: list[str] = []
    soft_memory, soft_cpu = handle.get("soft_memory"), handle.get("soft_cpu")
    if soft_memory and "memory" not in already and usage.memory_bytes > quantities.memory_bytes(soft_memory):
        already.add("memory")
        found.append(f"memory use {usage.memory_bytes / 2**20:.0f}Mi is above the soft limit {soft_memory}")
    if soft_cpu and "cpu" not in already and usage.cpu_cores > quantities.cpu_cores(soft_cpu) * 1.05:
        already.add("cpu")
        found.append(f"CPU use {usage.cpu_cores:.2f} cores is above the soft limit {soft_cpu}")
    return found
