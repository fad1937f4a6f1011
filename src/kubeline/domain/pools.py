"""Worker pools of the ``kubernetes-pool`` executor: long-lived pods that fork attempts.

A pool is declared in ``KUBELINE_KUBERNETES_POOLS`` (a JSON list of ``PoolSpec``) or as a
``WorkerPool`` custom resource (its schema is generated from this model). It becomes one
Deployment of hardened pods of the worker image; attempts are forked inside them, so the
attempts on one pod share its uid, filesystem and memory limit. That is why a pool serves only
the pipelines or tags it names, and never anything else: a pipeline that must not share a pod
with another names a pool of its own, or runs as Jobs (the ``kubernetes`` executor).
"""

from __future__ import annotations

import hashlib
from typing import Any

import pydantic

from kubeline.domain import specs

ANY = "*"
EXECUTOR = "kubernetes-pool"


class Autoscale(specs.Model):
    """The server's own scaler (opt-in): pods = ceil(demand / slots) within [min, max], where the
    demand is the pool's attempts running or waiting for a slot plus the first stages of the runs
    still queued for it. One server replica (the leader) applies it to the pool's Deployment;
    without it, the Deployment's replicas are left to an HPA or KEDA (or to you)."""

    min_replicas: int = pydantic.Field(1, ge=0, le=1000, alias="minReplicas",
                                       description="Pods kept when there is no demand (0: none).")
    max_replicas: int = pydantic.Field(ge=1, le=1000, alias="maxReplicas", description="Pods at most.")
    scale_down_delay: int = pydantic.Field(
        120, ge=0, le=86400, alias="scaleDownDelay",
        description="Seconds the demand must stay lower before pods are removed (the highest "
                    "recommendation of that window wins, as an HPA's stabilization window).")

    @pydantic.model_validator(mode="after")
    def _ordered(self) -> Autoscale:
        if self.min_replicas > self.max_replicas:
            raise ValueError(f"autoscale: minReplicas ({self.min_replicas}) is above maxReplicas "
                             f"({self.max_replicas}); lower minReplicas or raise maxReplicas")
        return self


class PoolSpec(specs.Model):
    name: specs.Name = pydantic.Field(description="The pool's name; its Deployment is kl-pool-NAME.")
    namespace: str | None = pydantic.Field(
        None, description="Namespace of its Deployment; default: KUBELINE_KUBERNETES_NAMESPACE.")
    replicas: int = pydantic.Field(1, ge=0, le=1000, description="Pods (an HPA may change it afterwards).")
    slots: int = pydantic.Field(4, ge=1, le=256, description="Attempts one pod runs at once; more wait.")
    image: str | None = pydantic.Field(None, description="Worker image; default: KUBELINE_KUBERNETES_IMAGE.")
    image_pull_policy: str = pydantic.Field("IfNotPresent", alias="imagePullPolicy")
    service_account: str | None = pydantic.Field(
        None, alias="serviceAccountName", description="Pods get no API token without one.")
    resources: specs.Resources = pydantic.Field(
        specs.Resources(), description="Of each pod (shared by the attempts running on it).")
    node_selector: dict[str, str] = pydantic.Field(default_factory=dict, alias="nodeSelector")
    tolerations: list[dict[str, Any]] = pydantic.Field(default_factory=list)
    pipelines: list[str] = pydantic.Field(
        default_factory=list, description="Pipelines this pool serves ('*': every pipeline).")
    tags: list[str] = pydantic.Field(default_factory=list, description="Pipelines with any of these tags too.")
    drain_seconds: int = pydantic.Field(
        600, ge=1, le=86400, alias="drainSeconds",
        description="How long a pod being removed (scale-down, rollout) waits for its attempts.")
    requirements: list[str] = pydantic.Field(
        default_factory=list,
        description="Packages (requirements.txt lines) the pods install once at start (uv, into an emptyDir); "
                    "a pipeline with requirements runs here only when its requirements are the same.")
    autoscale: Autoscale | None = pydantic.Field(
        None, description="Scale the pool's pods on its demand (server-side); unset: replicas stay as set.")

    @pydantic.model_validator(mode="after")
    def _serves_something(self) -> PoolSpec:
        if not self.pipelines and not self.tags:
            raise ValueError(f"pool {self.name!r} names no pipelines and no tags, so it would serve nothing: "
                             "add pipelines: [NAME, ...] (or ['*'] for every pipeline) or tags: [TAG, ...]")
        return self

    @pydantic.field_validator("requirements")
    @classmethod
    def _plain_requirements(cls, value: list[str]) -> list[str]:
        for line in value:
            if not line.strip() or line.strip().startswith("-"):
                raise ValueError(f"requirements: {line!r} is not a package requirement (e.g. 'six==1.16.0'); "
                                 "options and files (-r, --index-url) are not accepted in a pool's list")
        return value

    @property
    def requirements_hash(self) -> str | None:
        """The identity of the pool's packages (None: it installs none)."""
        return requirements_hash("\n".join(self.requirements)) if self.requirements else None

    @property
    def initial_replicas(self) -> int:
        """Pods of a new Deployment: ``replicas``, within the autoscale bounds when there are some."""
        if self.autoscale is None:
            return self.replicas
        return min(max(self.replicas, self.autoscale.min_replicas), self.autoscale.max_replicas)

    def serves(self, *, pipeline: str, tags: tuple[str, ...] | list[str]) -> bool:
        return ANY in self.pipelines or pipeline in self.pipelines or bool(set(tags) & set(self.tags))


def requirements_hash(text: str) -> str:
    """A requirements file's identity: its requirement lines (comments, blanks and order aside)."""
    lines = sorted({line.split("#", 1)[0].strip() for line in text.splitlines()} - {""})
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()[:12]


def choose(pools: list[PoolSpec], *, pipeline: str, tags: tuple[str, ...] | list[str],
           asked: str | None, requirements: str | None = None) -> PoolSpec:
    """The pool of an attempt: the one asked for (``kubernetes.pool``) if it serves the pipeline,
    else the first that does and installs the same ``requirements`` (a hash), else the first that
    does. ``ValueError`` says why none fits and what to change."""
    if not pools:
        raise ValueError("no worker pools are configured: declare one in KUBELINE_KUBERNETES_POOLS "
                         '(e.g. [{"name": "fast", "pipelines": ["' + pipeline + '"]}]) or as a WorkerPool '
                         "resource in the executor's namespace")
    if asked is not None:
        pool = next((p for p in pools if p.name == asked), None)
        if pool is None:
            raise ValueError(f"kubernetes.pool {asked!r} is not a configured pool (pools: "
                             f"{', '.join(p.name for p in pools)})")
        if not pool.serves(pipeline=pipeline, tags=tags):
            raise ValueError(f"pool {asked!r} does not serve pipeline {pipeline!r}: add it to the pool's "
                             "pipelines (or one of its tags to the pipeline), or choose another pool")
        return pool
    serving = [pool for pool in pools if pool.serves(pipeline=pipeline, tags=tags)]
    if requirements is not None:
        serving = [p for p in serving if p.requirements_hash == requirements] + serving
    if serving:
        return serving[0]
    raise ValueError(f"no worker pool serves pipeline {pipeline!r} (pools: "
                     + ", ".join(f"{p.name} serves {p.pipelines + [f'tag {t}' for t in p.tags]}" for p in pools)
                     + "); name it in a pool's pipelines or tags, or run it with executor: kubernetes")


def describe_invalid(exc: Exception) -> str:
    """A WorkerPool spec's validation error in one line: ``spec.FIELD: what is wrong`` for each."""
    if isinstance(exc, pydantic.ValidationError):
        return "; ".join(
            "spec" + "".join(f".{part}" for part in error["loc"]) + ": " + error["msg"].removeprefix("Value error, ")
            for error in exc.errors())
    return f"spec: {exc}"


class Condition(specs.Model):
    type: str = pydantic.Field(description="Ready or Invalid.")
    status: str = pydantic.Field(description="True, False or Unknown.")
    reason: str = pydantic.Field(description="One CamelCase word: PodsReady, Unschedulable, InvalidSpec ...")
    message: str = ""
    last_transition_time: str | None = pydantic.Field(None, alias="lastTransitionTime")


class AttemptCounts(specs.Model):
    running: int = pydantic.Field(0, description="On a pod of the pool.")
    waiting: int = pydantic.Field(0, description="Handed to the pool, waiting for a free slot or a pod.")
    queued: int = pydantic.Field(0, description="First stages of queued runs served by the pool, not yet started.")


class PoolStatus(specs.Model):
    """``.status`` of a ``WorkerPool`` resource, written by the server replica that scales pools."""

    observed_generation: int | None = pydantic.Field(None, alias="observedGeneration")
    replicas: int = pydantic.Field(0, description="Pods the pool's Deployment asks for.")
    ready_replicas: int = pydantic.Field(0, alias="readyReplicas", description="Pods ready to take attempts.")
    desired_replicas: int | None = pydantic.Field(
        None, alias="desiredReplicas", description="What the autoscaler recommends now (with autoscale).")
    slots: int = pydantic.Field(0, description="Attempts the ready pods can run at once (ready pods x slots).")
    attempts: AttemptCounts = AttemptCounts()
    conditions: list[Condition] = pydantic.Field(default_factory=list)
