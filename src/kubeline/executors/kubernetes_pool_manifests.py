"""Pure functions: a ``PoolSpec`` -> its Deployment, ConfigMap (the worker's code) and Secret.

The pods are hardened like attempt pods (``kubernetes.manifests``): non-root uid 1000,
read-only root filesystem, every capability dropped, seccomp RuntimeDefault, no privilege
escalation, no service-account token unless the pool names a service account. They write only
to emptyDirs (``/tmp`` and the work dir). The worker's code comes from the ConfigMap, not from
the image (as the Job path ships its entrypoint), so a server and an older image never disagree;
a change of code or spec changes the template's hash annotation, so the Deployment rolls (and
the old pods drain: preStop waits for their attempts, ``runtime.worker``).
"""

from __future__ import annotations

import base64
import hashlib
import json
import pathlib
from typing import Any

from kubeline.domain import pools
from kubeline.executors import warm_worker
from kubeline.executors.kubernetes import manifests
from kubeline.runtime import results, worker

POOL_LABEL = manifests.LABEL_PREFIX + "pool"
HASH_ANNOTATION = manifests.LABEL_PREFIX + "pool-hash"
CONTAINER = "worker"
CODE_DIR = "/kubeline/pool"
PACKAGES_DIR = "/kubeline/packages"  # emptyDir: the pool's requirements, installed once per pod
REQUIREMENTS_FILE = "requirements.txt"
REQUIREMENTS_ANNOTATION = manifests.LABEL_PREFIX + "requirements-hash"
TOKEN_KEY = "token"  # noqa: S105 - a key name


def name_for(pool: pools.PoolSpec) -> str:
    return f"kl-pool-{pool.name}"


def namespace_for(pool: pools.PoolSpec, defaults: manifests.Defaults) -> str:
    return pool.namespace or defaults.namespace


def worker_files() -> dict[str, str]:
    """The worker, its fork server and the result protocol, as the ConfigMap ships them."""
    return {"worker.py": pathlib.Path(worker.__file__).read_text(),
            "warm_worker.py": pathlib.Path(warm_worker.__file__).read_text(),
            "kubeline_results.py": pathlib.Path(results.__file__).read_text()}


def labels(pool: pools.PoolSpec) -> dict[str, str]:
    return {POOL_LABEL: pool.name, "app.kubernetes.io/managed-by": "kubeline",
            "app.kubernetes.io/component": "worker-pool"}


def pool_files(pool: pools.PoolSpec, files: dict[str, str]) -> dict[str, str]:
    """The worker's files, and the pool's requirements when it has some."""
    if not pool.requirements:
        return dict(files)
    return {**files, REQUIREMENTS_FILE: "\n".join(pool.requirements) + "\n"}


def config_map(pool: pools.PoolSpec, *, defaults: manifests.Defaults, files: dict[str, str]) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": name_for(pool), "namespace": namespace_for(pool, defaults), "labels": labels(pool)},
            "data": pool_files(pool, files)}


_HARDENED = {
    "allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
    "runAsNonRoot": True, "runAsUser": 1000, "runAsGroup": 1000,
    "capabilities": {"drop": ["ALL"]}, "privileged": False,
}


def _installer(pool: pools.PoolSpec, *, image: str) -> dict[str, Any]:
    """The init container that installs the pool's requirements into the packages emptyDir (uv,
    the image's Python); the worker then has them on PYTHONPATH, and so has every forked attempt."""
    return {
        "name": "requirements",
        "image": image,
        "imagePullPolicy": pool.image_pull_policy,
        "command": ["uv", "pip", "install", "--quiet", "--python", "python3", "--target", PACKAGES_DIR,
                    "-r", f"{CODE_DIR}/{REQUIREMENTS_FILE}"],
        "env": [{"name": "HOME", "value": manifests.TMP_DIR},
                {"name": "UV_CACHE_DIR", "value": f"{manifests.TMP_DIR}/uv-cache"}],
        "resources": _resources(pool),
        "securityContext": dict(_HARDENED),
        "volumeMounts": [{"name": "code", "mountPath": CODE_DIR, "readOnly": True},
                         {"name": "packages", "mountPath": PACKAGES_DIR},
                         {"name": "tmp", "mountPath": manifests.TMP_DIR}],
    }


def secret(pool: pools.PoolSpec, *, defaults: manifests.Defaults, token: str) -> dict[str, Any]:
    """The pool token: the executor sends it with every request, the worker checks it."""
    return {"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
            "metadata": {"name": name_for(pool), "namespace": namespace_for(pool, defaults), "labels": labels(pool)},
            "data": {TOKEN_KEY: base64.b64encode(token.encode()).decode()}}


def token_of(secret_object: dict[str, Any]) -> str | None:
    data = (secret_object.get("data") or {}).get(TOKEN_KEY)
    return base64.b64decode(data).decode() if data else None


def _resources(pool: pools.PoolSpec) -> dict[str, dict[str, str]]:
    found: dict[str, dict[str, str]] = {}
    for part in ("requests", "limits"):
        amounts = getattr(pool.resources, part)
        values = {k: getattr(amounts, k) for k in ("cpu", "memory") if getattr(amounts, k)}
        if values:
            found[part] = values
    return found


def deployment(pool: pools.PoolSpec, *, defaults: manifests.Defaults, files: dict[str, str]) -> dict[str, Any]:
    """The pool's Deployment; its template carries a hash of itself and of the worker's code."""
    name = name_for(pool)
    service_account = pool.service_account
    container: dict[str, Any] = {
        "name": CONTAINER,
        "image": pool.image or defaults.image,
        "imagePullPolicy": pool.image_pull_policy,
        "command": ["python3", f"{CODE_DIR}/worker.py"],
        "workingDir": manifests.WORK_DIR,
        "env": [
            {"name": "PYTHONUNBUFFERED", "value": "1"},
            {"name": "PYTHONDONTWRITEBYTECODE", "value": "1"},
            {"name": "HOME", "value": manifests.TMP_DIR},
            {"name": "KUBELINE_WORK", "value": manifests.WORK_DIR},
            {"name": "KUBELINE_POOL", "value": pool.name},
            {"name": "KUBELINE_POOL_PORT", "value": str(worker.PORT)},
            {"name": "KUBELINE_POOL_SLOTS", "value": str(pool.slots)},
            {"name": worker.TOKEN_ENV, "valueFrom": {"secretKeyRef": {"name": name, "key": TOKEN_KEY}}},
        ],
        "ports": [{"name": "worker", "containerPort": worker.PORT, "protocol": "TCP"}],
        "readinessProbe": {"httpGet": {"path": "/healthz", "port": worker.PORT},
                           "periodSeconds": 1, "failureThreshold": 2},
        "lifecycle": {"preStop": {"exec": {"command": [
            "python3", f"{CODE_DIR}/worker.py", "drain", str(pool.drain_seconds)]}}},
        "resources": _resources(pool),
        "securityContext": dict(_HARDENED),
        "volumeMounts": [{"name": "code", "mountPath": CODE_DIR, "readOnly": True},
                         {"name": "work", "mountPath": manifests.WORK_DIR},
                         {"name": "tmp", "mountPath": manifests.TMP_DIR}],
    }
    if pool.requirements:
        container["env"].append({"name": "PYTHONPATH", "value": PACKAGES_DIR})
        container["volumeMounts"].append({"name": "packages", "mountPath": PACKAGES_DIR, "readOnly": True})
    pod_spec: dict[str, Any] = {
        "enableServiceLinks": False,
        "automountServiceAccountToken": service_account is not None,
        "terminationGracePeriodSeconds": pool.drain_seconds + 5,
        "securityContext": {"runAsNonRoot": True, "runAsUser": 1000, "runAsGroup": 1000,
                            "fsGroup": 1000, "seccompProfile": {"type": "RuntimeDefault"}},
        "containers": [container],
        "volumes": [{"name": "code", "configMap": {"name": name, "defaultMode": 0o444}},
                    {"name": "work", "emptyDir": {}}, {"name": "tmp", "emptyDir": {}}],
    }
    if pool.requirements:
        pod_spec["initContainers"] = [_installer(pool, image=container["image"])]
        pod_spec["volumes"].append({"name": "packages", "emptyDir": {}})
    if service_account:
        pod_spec["serviceAccountName"] = service_account
    if pool.node_selector:
        pod_spec["nodeSelector"] = dict(pool.node_selector)
    if pool.tolerations:
        pod_spec["tolerations"] = [dict(t) for t in pool.tolerations]
    digest = hashlib.sha256(json.dumps([pod_spec, pool_files(pool, files)], sort_keys=True).encode()).hexdigest()[:16]
    meta = {"name": name, "namespace": namespace_for(pool, defaults), "labels": labels(pool),
            "annotations": {HASH_ANNOTATION: digest,
                            REQUIREMENTS_ANNOTATION: pool.requirements_hash or "none"}}
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": meta, "spec": {
        "replicas": pool.initial_replicas,
        "selector": {"matchLabels": {POOL_LABEL: pool.name}},
        "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}},
        "template": {"metadata": {"labels": labels(pool), "annotations": {HASH_ANNOTATION: digest}},
                     "spec": pod_spec},
    }}
