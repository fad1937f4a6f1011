"""Pure functions: an ``AttemptSpec`` -> the container of one attempt (name, labels, config).

Nothing here talks to a daemon, so every field can be pinned by unit tests. The container is
hardened the same way as the Kubernetes pod: non-root uid 1000, read-only root filesystem with
a tmpfs ``/tmp``, every capability dropped, ``no-new-privileges``, a pids limit, an init
process (tini) as PID 1 so signals reach the stage and zombies are reaped, and the network
from the settings. It writes only to ``/tmp`` and to the attempt's work dir, a host directory
bind-mounted read-write; the code and the bundle (entry script, plan, secret env) are mounted
read-only. Secret values are never in the container's config (``docker inspect`` shows the
config to anyone with access to the daemon): the entry script reads them from the bundle.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any

from kubeline.executors import base

LABEL_PREFIX = "kubeline.dev/"
ATTEMPT_LABEL = LABEL_PREFIX + "attempt"
MANAGED_LABEL = LABEL_PREFIX + "managed-by"
CODE_DIR = "/kubeline/code"  # read-only: a snapshot of the pipeline folder
BUNDLE_DIR = "/kubeline/bundle"  # read-only: entry.py, plan.json, env.json, requirements.txt
WORK_DIR = "/kubeline/work"  # read-write: io/, venv/, home/, tmp/
ARTIFACTS_DIR = "/kubeline/artifacts"  # read-write
USER = "1000:1000"
PIDS_LIMIT = 4096
_NAME = re.compile(r"[^a-zA-Z0-9_.-]")


@dataclasses.dataclass(frozen=True, kw_only=True)
class Defaults:
    image: str = "kubeline-worker:dev"
    network: str = "none"  # "bridge", "none", "host" or a user-defined network
    tmp_size: str = "256m"  # the tmpfs /tmp (uv cache, pip temp files)


@dataclasses.dataclass(frozen=True, kw_only=True)
class HostDirs:
    """Where the attempt's mounts come from on the daemon's host."""

    code: str | None
    bundle: str
    work: str
    artifacts: str


@dataclasses.dataclass(frozen=True, kw_only=True)
class Container:
    name: str
    image: str
    command: list[str]
    user: str
    working_dir: str
    environment: dict[str, str]
    labels: dict[str, str]
    host_config: dict[str, Any]  # the Engine API's HostConfig, as sent


def container_name(attempt_id: str) -> str:
    return "kubeline-" + _NAME.sub("_", attempt_id)[:200]


def label_value(text: str) -> str:
    return _NAME.sub("_", text)[:63].strip("._-") or "x"


def labels(spec: base.AttemptSpec) -> dict[str, str]:
    return {
        MANAGED_LABEL: "kubeline",
        LABEL_PREFIX + "pipeline": label_value(spec.pipeline),
        LABEL_PREFIX + "run": label_value(spec.run_id),
        LABEL_PREFIX + "stage": label_value(spec.stage_id),
        LABEL_PREFIX + "attempt-number": str(spec.number),
        ATTEMPT_LABEL: label_value(spec.attempt_id),
    }


def environment(spec: base.AttemptSpec) -> dict[str, str]:
    """Plain env of the container: the stage contract, then the stage's env without secrets."""
    env = {
        "PYTHONUNBUFFERED": "1",
        "HOME": f"{WORK_DIR}/home",
        "UV_CACHE_DIR": "/tmp/uv-cache",  # noqa: S108 - the container's own tmpfs
        "KUBELINE_INPUTS": f"{WORK_DIR}/io/inputs.json",
        "KUBELINE_CONFIG": f"{WORK_DIR}/io/config.json",
        "KUBELINE_OUTPUTS": f"{WORK_DIR}/io/outputs.json",
        "KUBELINE_ROUTE_FILE": f"{WORK_DIR}/io/route",
        "KUBELINE_ARTIFACTS_DIR": ARTIFACTS_DIR,
        "KUBELINE_RUN_ID": spec.run_id,
        "KUBELINE_PIPELINE": spec.pipeline,
        "KUBELINE_STAGE": spec.stage_id,
        "KUBELINE_ATTEMPT": str(spec.number),
        "KUBELINE_ATTEMPT_ID": spec.attempt_id,
    }
    env.update({k: v for k, v in spec.env.items() if k not in spec.secret_env})
    return env


def secret_environment(spec: base.AttemptSpec) -> dict[str, str]:
    return {k: v for k, v in spec.env.items() if k in spec.secret_env}


def plan(spec: base.AttemptSpec) -> dict[str, Any]:
    """What the entry script needs to know (``plan.json`` in the bundle)."""
    return {"argv": list(spec.argv), "runtime": spec.runtime.value,
            "python_version": spec.python_version,
            "requirements": spec.requirements is not None, "extra_packages": list(spec.extra_packages),
            "cwd": CODE_DIR if spec.folder is not None else WORK_DIR + "/tmp"}  # noqa: S108


def host_config(spec: base.AttemptSpec, *, defaults: Defaults, dirs: HostDirs) -> dict[str, Any]:
    binds = [f"{dirs.bundle}:{BUNDLE_DIR}:ro", f"{dirs.work}:{WORK_DIR}:rw",
             f"{dirs.artifacts}:{ARTIFACTS_DIR}:rw"]
    if dirs.code is not None:
        binds.insert(0, f"{dirs.code}:{CODE_DIR}:ro")
    config: dict[str, Any] = {
        "Binds": binds,
        "ReadonlyRootfs": True,
        "Tmpfs": {"/tmp": f"rw,nosuid,nodev,size={defaults.tmp_size},mode=1777"},  # noqa: S108
        "CapDrop": ["ALL"],
        "SecurityOpt": ["no-new-privileges:true"],
        "NetworkMode": defaults.network,
        "PidsLimit": PIDS_LIMIT,
        "Init": True,
        "Privileged": False,
        # json-file without rotation: the follower may lag, and nothing may be lost meanwhile.
        "LogConfig": {"Type": "json-file", "Config": {}},
        "RestartPolicy": {"Name": "no"},
    }
    limits, requests = spec.resources.limits, spec.resources.requests
    if limits.memory_bytes is not None:
        config["Memory"] = limits.memory_bytes
        config["MemorySwap"] = limits.memory_bytes  # no swap: over the limit is an OOM kill
    if requests.memory_bytes is not None and (limits.memory_bytes is None
                                              or requests.memory_bytes <= limits.memory_bytes):
        config["MemoryReservation"] = requests.memory_bytes
    if limits.cpu_cores is not None:
        config["NanoCpus"] = max(1, round(limits.cpu_cores * 1e9))
    if requests.cpu_cores is not None:
        config["CpuShares"] = max(2, round(requests.cpu_cores * 1024))
    return config


def container(spec: base.AttemptSpec, *, defaults: Defaults, dirs: HostDirs) -> Container:
    return Container(
        name=container_name(spec.attempt_id), image=defaults.image,
        command=["python3", f"{BUNDLE_DIR}/entry.py"], user=USER,
        working_dir=CODE_DIR if spec.folder is not None else WORK_DIR,
        environment=environment(spec), labels=labels(spec),
        host_config=host_config(spec, defaults=defaults, dirs=dirs))
