"""Pure functions: an ``AttemptSpec`` -> the Job, ConfigMap and Secret of one attempt (dicts).

Nothing here talks to a cluster, so every field is pinned by golden-dict unit tests. The pod is
hardened (non-root uid 1000, read-only root filesystem, all capabilities dropped, seccomp
RuntimeDefault, no privilege escalation, no service-account token unless a service account is
asked for); it writes only to emptyDirs: ``/tmp`` and the work dir. The ConfigMap (code bundle,
inputs, config, the entrypoint) and the Secret (secret env values, the attempt token) are
created first and then owned by the Job, so deleting the Job (cancel, TTL) deletes them too.
Secret values never appear in the Job: the container reads them through ``secretKeyRef``. An
attempt with neither secret env nor an upload URL has no Secret at all (``needs_secret``).

Small bundles (``INLINE_LIMIT``, after compression) travel inside the Job instead, in one env
var the bootstrap (``BOOT``, ``python3 -c``) unpacks into the work dir and removes from the
environment: no ConfigMap to create and own, and no ConfigMap volume for the kubelet to mount
(any volume makes the kubelet wait for its mount loop before it starts the pod). The bundle is
not secret (code, inputs, config), so it may be seen in the Job; secrets stay in the Secret.

Folders too large for the bundle reach the pod another way, and the bundle then carries no
code, only ``code_dir`` in the plan: a copy on the code PVC (``Defaults.code_claim``; the
executor writes it, ``code_volume``) mounted read-only with ``subPath`` at ``CODE_DIR``, or a
folder baked into the image (``kubernetes.codePath``). With a code claim and no uv-cache claim,
the uv cache lives on the code claim too (``subPath: uv-cache``): Fast-Flow's layout, one PVC.
"""

from __future__ import annotations

import base64
import dataclasses
import functools
import gzip
import json
import math
import pathlib
import re
from typing import Any, TypedDict

from kubeline.domain import errors
from kubeline.executors import base
from kubeline.runtime import results

LABEL_PREFIX = "kubeline.dev/"
ATTEMPT_LABEL = LABEL_PREFIX + "attempt"
CONTAINER = "main"
BUNDLE_DIR = "/kubeline/bundle"  # the ConfigMap, read-only
TMP_DIR = "/tmp"  # noqa: S108 - an emptyDir of its own in the pod
WORK_DIR = "/kubeline/work"  # emptyDir: code, venv, outputs, artifacts
UV_CACHE_DIR = "/kubeline/uv-cache"
CODE_DIR = "/kubeline/code"  # the copy on the code claim, read-only
UV_CACHE_SUB_PATH = "uv-cache"  # of the code claim, when it also holds the uv cache
ENTRYPOINT_KEY = "pod.py"
RESULTS_KEY = "kubeline_results.py"  # the result protocol, beside the entrypoint
CODE_KEY = "code.tar.gz"
CONFIGMAP_LIMIT = 1000 * 1024  # bytes of data a ConfigMap may hold (the API's cap is 1 MiB)
TOKEN_KEY = "KUBELINE_ATTEMPT_TOKEN"  # noqa: S105 - a key name, not a secret
INLINE_KEY = "KUBELINE_BUNDLE_DATA"
INLINE_LIMIT = 96 * 1024  # bytes of the env var (Linux takes at most 128 KiB per env string)
INLINE_DIR = WORK_DIR + "/bundle"  # where the bootstrap writes an inline bundle's files
BOOT = (  # unpack the inline bundle, drop it from the environment, run the entrypoint
    "import base64,gzip,json,os\n"
    f"d=json.loads(gzip.decompress(base64.b64decode(os.environ.pop({INLINE_KEY!r}))))\n"
    "b=os.environ['KUBELINE_BUNDLE']\nos.makedirs(b,exist_ok=True)\n"
    "for k,v in d.items():\n"
    " with open(os.path.join(b,k),'wb') as f:f.write(base64.b64decode(v))\n"
    f"exec(compile(base64.b64decode(d[{ENTRYPOINT_KEY!r}]),{ENTRYPOINT_KEY!r},'exec'),{{'__name__':'__main__'}})\n")
_LABEL_VALUE = re.compile(r"[^A-Za-z0-9._-]")


class ObjectMeta(TypedDict, total=False):
    name: str
    namespace: str
    labels: dict[str, str]
    annotations: dict[str, str]
    ownerReferences: list[dict[str, Any]]
    uid: str


class ConfigMap(TypedDict):
    apiVersion: str
    kind: str
    metadata: ObjectMeta
    data: dict[str, str]
    binaryData: dict[str, str]


class Secret(TypedDict):
    apiVersion: str
    kind: str
    metadata: ObjectMeta
    type: str
    stringData: dict[str, str]


class Job(TypedDict):
    apiVersion: str
    kind: str
    metadata: ObjectMeta
    spec: dict[str, Any]


@dataclasses.dataclass(frozen=True, kw_only=True)
class Defaults:
    """Executor-wide settings; ``spec.kubernetes`` of a pipeline/stage overrides the first five."""

    namespace: str = "default"
    image: str = "kubeline-worker:dev"
    image_pull_policy: str = "IfNotPresent"
    service_account: str | None = None
    api_url: str | None = None  # how pods reach the Kubeline API to upload results; None: the pod log
    ttl_seconds: int = 3600  # finished Jobs kept this long (for kubectl; logs are stored anyway)
    uv_cache_claim: str | None = None  # a PVC for the uv cache; default: an emptyDir per pod
    code_claim: str | None = None  # a PVC for large folders (and the uv cache, without uv_cache_claim)
    grace_seconds: int = 5


def name_for(attempt_id: str) -> str:
    """The Job/ConfigMap/Secret name of an attempt (attempt ids are K8s-name safe)."""
    return "kl-" + attempt_id.lower()


def label_value(text: str) -> str:
    value = _LABEL_VALUE.sub("_", text)[:63]
    return value.strip("._-") or "x"


def labels(spec: base.AttemptSpec) -> dict[str, str]:
    return {
        LABEL_PREFIX + "pipeline": label_value(spec.pipeline),
        LABEL_PREFIX + "run": label_value(spec.run_id),
        LABEL_PREFIX + "stage": label_value(spec.stage_id),
        ATTEMPT_LABEL: label_value(spec.attempt_id),
        LABEL_PREFIX + "attempt-number": str(spec.number),
        "app.kubernetes.io/managed-by": "kubeline",
    }


def namespace_for(spec: base.AttemptSpec, defaults: Defaults) -> str:
    return spec.kubernetes.namespace or defaults.namespace


def _meta(spec: base.AttemptSpec, defaults: Defaults) -> ObjectMeta:
    return {"name": name_for(spec.attempt_id), "namespace": namespace_for(spec, defaults),
            "labels": labels(spec)}


def launch_plan(spec: base.AttemptSpec, *, has_code: bool, requirements: bool,
                code_dir: str | None = None) -> dict[str, Any]:
    """What the in-pod entrypoint (``kubeline.runtime.pod``) does: it reads this as JSON.
    ``code_dir``: the code is already in the pod there (volume or image), else in the work dir."""
    return {"argv": list(spec.argv), "runtime": spec.runtime.value,
            "python_version": spec.python_version, "requirements": requirements,
            "extra_packages": list(spec.extra_packages), "has_code": has_code,
            "code_dir": code_dir, "memory_limit": spec.resources.limits.memory}


@functools.cache
def _results_source() -> str:
    return pathlib.Path(results.__file__).read_text()


def code_dir_for(spec: base.AttemptSpec, *, code_sub_path: str | None) -> str | None:
    """Where the pod finds code that is not in the bundle: the image's folder, or the claim's copy."""
    if spec.kubernetes.code_path:
        return spec.kubernetes.code_path
    return CODE_DIR if code_sub_path is not None else None


def config_map(spec: base.AttemptSpec, *, defaults: Defaults, entrypoint: str, code: bytes | None,
               requirements: str | None, code_dir: str | None = None) -> ConfigMap:
    """The attempt's bundle; ``ExecutorError`` when it is too large for a ConfigMap."""
    plan = launch_plan(spec, has_code=code is not None, requirements=requirements is not None,
                       code_dir=code_dir)
    data = {ENTRYPOINT_KEY: entrypoint, RESULTS_KEY: _results_source(), "inputs.json": json.dumps(spec.inputs),
            "config.json": json.dumps(spec.config), "plan.json": json.dumps(plan)}
    if requirements is not None:
        data["requirements.txt"] = requirements
    binary = {CODE_KEY: base64.b64encode(code).decode()} if code is not None else {}
    size = sum(len(v.encode()) for v in data.values()) + (len(code) if code is not None else 0)
    if size > CONFIGMAP_LIMIT:
        raise errors.ExecutorError(
            f"stage {spec.stage_id}: code, inputs and config take {size // 1024} KiB, more than the "
            f"{CONFIGMAP_LIMIT // 1024} KiB a ConfigMap holds; shrink the pipeline folder, pass "
            "large data by reference (a URL or object-store key) instead of as inputs, or keep "
            "the code out of the bundle (KUBELINE_KUBERNETES_CODE_CLAIM and "
            "KUBELINE_KUBERNETES_CODE_DIR, or kubernetes.image with kubernetes.codePath)")
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": _meta(spec, defaults),
            "data": data, "binaryData": binary}


def inline_bundle(spec: base.AttemptSpec, *, entrypoint: str, code: bytes | None,
                  requirements: str | None, code_dir: str | None = None) -> str | None:
    """The bundle as one env value (base64 of gzipped JSON of base64 files); None when larger
    than ``INLINE_LIMIT`` (then it goes in a ConfigMap)."""
    cm = config_map(spec, defaults=Defaults(), entrypoint=entrypoint, code=code, requirements=requirements,
                    code_dir=code_dir)
    files = {k: base64.b64encode(v.encode()).decode() for k, v in cm["data"].items()}
    files.update(cm["binaryData"])
    value = base64.b64encode(gzip.compress(json.dumps(files).encode(), compresslevel=6, mtime=0)).decode()
    return value if len(value) <= INLINE_LIMIT else None


def needs_secret(spec: base.AttemptSpec, *, defaults: Defaults) -> bool:
    """Whether the attempt needs a Secret: it has secret env values, or its token authorizes an
    upload (``defaults.api_url``). Otherwise the token only frames the pod's log (end markers,
    result lines) and authorizes nothing, so it travels in the Job: a pod that refers to a
    Secret waits for the kubelet's per-Secret watch, whose first list the node authorizer
    often refuses for a just-bound pod ("failed to sync secret cache"), one to two seconds."""
    return bool(defaults.api_url) or any(key in spec.env for key in spec.secret_env)


def secret(spec: base.AttemptSpec, *, defaults: Defaults, token: str) -> Secret:
    """Secret env values and the attempt token; the Job refers to each key."""
    values = {k: v for k, v in spec.env.items() if k in spec.secret_env}
    values[TOKEN_KEY] = token
    return {"apiVersion": "v1", "kind": "Secret", "metadata": _meta(spec, defaults),
            "type": "Opaque", "stringData": values}


def _env(spec: base.AttemptSpec, *, defaults: Defaults, inline: str | None,
         frame_key: str | None) -> list[dict[str, Any]]:
    name = name_for(spec.attempt_id)
    bundle = BUNDLE_DIR if inline is None else INLINE_DIR
    env: list[dict[str, Any]] = [
        {"name": "PYTHONUNBUFFERED", "value": "1"},
        {"name": "HOME", "value": TMP_DIR},
        {"name": "UV_CACHE_DIR", "value": UV_CACHE_DIR},
        {"name": "KUBELINE_BUNDLE", "value": bundle},
        {"name": "KUBELINE_WORK", "value": WORK_DIR},
        {"name": "KUBELINE_INPUTS", "value": f"{bundle}/inputs.json"},
        {"name": "KUBELINE_CONFIG", "value": f"{bundle}/config.json"},
        {"name": "KUBELINE_OUTPUTS", "value": f"{WORK_DIR}/io/outputs.json"},
        {"name": "KUBELINE_ROUTE_FILE", "value": f"{WORK_DIR}/io/route"},
        {"name": "KUBELINE_ARTIFACTS_DIR", "value": f"{WORK_DIR}/artifacts"},
        {"name": "KUBELINE_RUN_ID", "value": spec.run_id},
        {"name": "KUBELINE_PIPELINE", "value": spec.pipeline},
        {"name": "KUBELINE_STAGE", "value": spec.stage_id},
        {"name": "KUBELINE_ATTEMPT", "value": str(spec.number)},
        {"name": "KUBELINE_ATTEMPT_ID", "value": spec.attempt_id},
        {"name": TOKEN_KEY, "value": frame_key} if frame_key is not None
        else {"name": TOKEN_KEY, "valueFrom": {"secretKeyRef": {"name": name, "key": TOKEN_KEY}}},
    ]
    if defaults.api_url:
        env.append({"name": "KUBELINE_URL", "value": defaults.api_url})
    if inline is not None:
        env.append({"name": INLINE_KEY, "value": inline})
    reserved = {item["name"] for item in env}
    for key in sorted(spec.env):
        if key in reserved:
            continue
        if key in spec.secret_env:
            env.append({"name": key, "valueFrom": {"secretKeyRef": {"name": name, "key": key}}})
        else:
            env.append({"name": key, "value": spec.env[key]})
    for key in sorted(spec.env_from):
        source = spec.env_from[key].value_from
        ref = source.secret_key_ref or source.config_map_key_ref
        assert ref is not None  # the model guarantees exactly one
        kind = "secretKeyRef" if source.secret_key_ref is not None else "configMapKeyRef"
        item = {"name": ref.name, "key": ref.key, **({"optional": True} if ref.optional else {})}
        env.append({"name": key, "valueFrom": {kind: item}})
    return env


def _resources(spec: base.AttemptSpec) -> dict[str, dict[str, str]]:
    result: dict[str, dict[str, str]] = {}
    for part in ("requests", "limits"):
        amounts = getattr(spec.resources, part)
        values = {k: getattr(amounts, k) for k in ("cpu", "memory") if getattr(amounts, k)}
        if values:
            result[part] = values
    return result


def _volumes(name: str, *, defaults: Defaults, inline: str | None,
             code_sub_path: str | None) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The pod's volumes and the container's mounts. One volume per claim, even when the code
    claim holds both the code copy and the uv cache (two mounts with their own ``subPath``)."""
    volumes: list[dict[str, Any]] = []
    mounts: list[dict[str, Any]] = []
    if inline is None:
        volumes.append({"name": "bundle", "configMap": {"name": name, "defaultMode": 0o444}})
        mounts.append({"name": "bundle", "mountPath": BUNDLE_DIR, "readOnly": True})
    volumes += [{"name": "work", "emptyDir": {}}, {"name": "tmp", "emptyDir": {}}]
    mounts += [{"name": "work", "mountPath": WORK_DIR}, {"name": "tmp", "mountPath": TMP_DIR}]
    uv_on_code_claim = defaults.code_claim is not None and not defaults.uv_cache_claim
    if uv_on_code_claim:
        mounts.append({"name": "code", "mountPath": UV_CACHE_DIR, "subPath": UV_CACHE_SUB_PATH})
    else:
        volumes.append({"name": "uv-cache", **(
            {"persistentVolumeClaim": {"claimName": defaults.uv_cache_claim}}
            if defaults.uv_cache_claim else {"emptyDir": {}})})
        mounts.append({"name": "uv-cache", "mountPath": UV_CACHE_DIR})
    if code_sub_path is not None:
        if defaults.code_claim is None:
            raise ValueError("code_sub_path needs Defaults.code_claim")
        mounts.append({"name": "code", "mountPath": CODE_DIR, "subPath": code_sub_path, "readOnly": True})
    if uv_on_code_claim or code_sub_path is not None:
        claim: dict[str, Any] = {"claimName": defaults.code_claim}
        if not uv_on_code_claim:
            claim["readOnly"] = True
        volumes.append({"name": "code", "persistentVolumeClaim": claim})
    return volumes, mounts


def job(spec: base.AttemptSpec, *, defaults: Defaults, inline: str | None = None,
        code_sub_path: str | None = None, frame_key: str | None = None) -> Job:
    """The attempt's Job; ``inline``: the bundle travels in the Job (else in the ConfigMap);
    ``code_sub_path``: the folder's copy on the code claim, mounted at ``CODE_DIR``;
    ``frame_key``: the attempt token as a plain value, when it authorizes nothing
    (``needs_secret`` is False), else the container reads it from the attempt's Secret."""
    if frame_key is not None and needs_secret(spec, defaults=defaults):
        raise ValueError("frame_key: this attempt's token authorizes an upload or it has secret env; use its Secret")
    k8s = spec.kubernetes
    name = name_for(spec.attempt_id)
    service_account = k8s.service_account or defaults.service_account
    volumes, mounts = _volumes(name, defaults=defaults, inline=inline, code_sub_path=code_sub_path)
    container: dict[str, Any] = {
        "name": CONTAINER,
        "image": k8s.image or defaults.image,
        "imagePullPolicy": k8s.image_pull_policy or defaults.image_pull_policy,
        "command": ["python3", f"{BUNDLE_DIR}/{ENTRYPOINT_KEY}"] if inline is None else ["python3", "-c", BOOT],
        "workingDir": WORK_DIR,
        "env": _env(spec, defaults=defaults, inline=inline, frame_key=frame_key),
        "resources": _resources(spec),
        "securityContext": {
            "allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
            "runAsNonRoot": True, "runAsUser": 1000, "runAsGroup": 1000,
            "capabilities": {"drop": ["ALL"]}, "privileged": False,
        },
        "volumeMounts": mounts,
        "terminationMessagePolicy": "File",
    }
    pod_spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "enableServiceLinks": False,
        "automountServiceAccountToken": service_account is not None,
        "terminationGracePeriodSeconds": defaults.grace_seconds,
        "securityContext": {"runAsNonRoot": True, "runAsUser": 1000, "runAsGroup": 1000,
                            "fsGroup": 1000, "seccompProfile": {"type": "RuntimeDefault"}},
        "containers": [container],
        "volumes": volumes,
    }
    if service_account:
        pod_spec["serviceAccountName"] = service_account
    if k8s.node_selector:
        pod_spec["nodeSelector"] = dict(k8s.node_selector)
    if k8s.tolerations:
        pod_spec["tolerations"] = [dict(t) for t in k8s.tolerations]
    job_spec: dict[str, Any] = {
        "backoffLimit": 0,
        "ttlSecondsAfterFinished": defaults.ttl_seconds,
        "template": {"metadata": {"labels": labels(spec)}, "spec": pod_spec},
    }
    if spec.timeout:
        job_spec["activeDeadlineSeconds"] = max(1, math.ceil(spec.timeout))
    return {"apiVersion": "batch/v1", "kind": "Job", "metadata": _meta(spec, defaults),
            "spec": job_spec}


def owner_reference(job_object: dict[str, Any]) -> dict[str, Any]:
    """An ownerReference to a created Job (it needs the uid the API server gave it)."""
    meta = job_object["metadata"]
    return {"apiVersion": "batch/v1", "kind": "Job", "name": meta["name"], "uid": meta["uid"],
            "blockOwnerDeletion": False, "controller": False}
