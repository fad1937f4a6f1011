"""``MemoryCluster``: the operator's view of the API server, in memory (for tests, like ``testing.executors``).

It keeps Pipeline/PipelineRun bodies, ConfigMaps and Secrets by (namespace, name) and applies
status patches as a merge, as the status subresource does; ``forbidden`` makes every call raise
the error a 403 becomes, ``unreachable`` the one a dead connection becomes.
"""

from __future__ import annotations

import copy
from typing import Any

from kubeline import k8s
from kubeline.domain import errors


class MemoryCluster:
    def __init__(self, namespace: str = "default") -> None:
        self.namespace = namespace
        self.objects: dict[tuple[str, str, str], dict[str, Any]] = {}
        self.config_maps: dict[tuple[str, str], dict[str, bytes]] = {}
        self.secrets: dict[tuple[str, str], dict[str, bytes]] = {}
        self.status_writes: list[tuple[str, str, dict[str, Any]]] = []
        self.forbidden = False
        self.unreachable = False

    def _check(self, what: str) -> None:
        if self.unreachable:
            raise errors.KubelineError(f"{what}: cannot reach the Kubernetes API server (MemoryCluster)")
        if self.forbidden:
            raise errors.KubelineError(f"{what}: forbidden (MemoryCluster.forbidden)")

    def put(self, plural: str, body: dict[str, Any]) -> dict[str, Any]:
        meta = body.setdefault("metadata", {})
        meta.setdefault("namespace", self.namespace)
        meta.setdefault("generation", 1)
        self.objects[(plural, meta["namespace"], meta["name"])] = body
        return body

    def body(self, plural: str, name: str, namespace: str | None = None) -> dict[str, Any]:
        return self.objects[(plural, namespace or self.namespace, name)]

    def get_pipeline(self, name: str, *, namespace: str | None = None) -> dict[str, Any]:
        ns = namespace or self.namespace
        self._check(f"Pipeline {ns}/{name}")
        try:
            return copy.deepcopy(self.objects[(k8s.PIPELINES, ns, name)])
        except KeyError:
            raise errors.NotFoundError(f"Pipeline {ns}/{name} not found") from None

    def patch_status(self, plural: str, name: str, status: dict[str, Any], *,
                     namespace: str | None = None) -> dict[str, Any]:
        ns = namespace or self.namespace
        self._check(f"{plural} {ns}/{name} status")
        try:
            body = self.objects[(plural, ns, name)]
        except KeyError:
            raise errors.NotFoundError(f"{plural} {ns}/{name} not found") from None
        merged = dict(body.get("status") or {})
        for key, value in status.items():
            if value is None:
                merged.pop(key, None)
            else:
                merged[key] = copy.deepcopy(value)
        body["status"] = merged
        self.status_writes.append((plural, name, copy.deepcopy(status)))
        return body

    def read_config_map(self, name: str, *, namespace: str | None = None) -> dict[str, bytes]:
        return self._read(self.config_maps, "ConfigMap", name, namespace)

    def read_secret(self, name: str, *, namespace: str | None = None) -> dict[str, bytes]:
        return self._read(self.secrets, "Secret", name, namespace)

    def _read(self, table: dict[tuple[str, str], dict[str, bytes]], kind: str, name: str,
              namespace: str | None) -> dict[str, bytes]:
        ns = namespace or self.namespace
        self._check(f"{kind} {ns}/{name}")
        try:
            return dict(table[(ns, name)])
        except KeyError:
            raise errors.NotFoundError(f"{kind} {ns}/{name} not found") from None
