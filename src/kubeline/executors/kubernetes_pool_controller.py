"""The worker pools' controller: scale each pool on its demand, and write its ``WorkerPool`` status.

One server replica acts (a ``coordination.k8s.io`` Lease, ``operator.leader``); the others wait
to take over. Every ``interval`` seconds the acting replica:

- reads the pools' demand from the database (``Store.executor_demand``: counts only) and
  attributes it to pools (``domain.pool_scaling``): attempts on a pool, and the first stages of
  the runs still queued for it, so a pool grows before its runs start rather than after;
- for a pool with ``autoscale``, sets its Deployment's replicas to ``ceil(demand / slots)``
  within the bounds, at once when growing and only after ``scaleDownDelay`` when shrinking
  (``pool_scaling.Stabilizer``); a removed pod drains first, so no running attempt is killed;
- writes ``.status`` of each ``WorkerPool`` resource (replicas, ready pods, slots, attempts,
  conditions ``Ready`` and ``Invalid`` with their reasons), only when it changed.

A pool without ``autoscale`` is never resized here: an HPA or KEDA may own its replicas.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import logging
import time
from collections.abc import Callable
from typing import Any, Protocol

from kubeline.domain import errors, pool_scaling, pools
from kubeline.executors import kubernetes_pool
from kubeline.executors import kubernetes_pool_client as pool_client
from kubeline.executors import kubernetes_pool_manifests as pool_manifests
from kubeline.executors.kubernetes import kube
from kubeline.storage import base as storage

log = logging.getLogger("kubeline.executors.kubernetes_pool_controller")
LEASE_NAME = "kubeline-worker-pools"


class Election(Protocol):
    async def try_acquire_or_renew(self) -> bool: ...
    async def release(self) -> None: ...


@dataclasses.dataclass(frozen=True, kw_only=True)
class Observed:
    """One pool as the last round saw it (tests and ``/metrics`` read it)."""

    demand: pool_scaling.Demand
    status: pools.PoolStatus


class PoolController:
    def __init__(self, *, executor: kubernetes_pool.PoolExecutor, store: storage.Store, default_executor: str,
                 election: Election | None, interval: float = 2.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.executor, self.store, self.default_executor = executor, store, default_executor
        self.election, self.interval, self.clock = election, interval, clock
        self.observed: dict[str, Observed] = {}
        self._stabilizers: dict[str, pool_scaling.Stabilizer] = {}

    async def run_forever(self) -> None:
        try:
            while True:
                try:
                    await self.tick()
                except (kube.ApiError, OSError, errors.KubelineError) as exc:
                    said = kube.describe(exc) if isinstance(exc, kube.ApiError) else str(exc)
                    log.warning("worker pools: this round failed, the next one retries: %s", said)
                await asyncio.sleep(self.interval)
        finally:
            if self.election is not None:
                await asyncio.shield(self.election.release())

    async def tick(self) -> bool:
        """One round; False when another replica acts."""
        if self.election is not None and not await self.election.try_acquire_or_renew():
            self._stabilizers.clear()  # a new leader watches a whole window before it scales down
            return False
        await self.executor.read_resources(every=self.interval)
        counts = await self.store.executor_demand(executor=pools.EXECUTOR)
        specs = self.executor.pool_specs()
        demand = pool_scaling.attribute(
            queued_runs=counts.queued_runs, held=counts.held, unsent=counts.unsent,
            pipelines={name: p.spec for name, p in counts.pipelines.items()}, pools_=specs,
            default_executor=self.default_executor)
        observed = {spec.name: Observed(demand=demand[spec.name], status=await self._round(spec, demand[spec.name]))
                    for spec in specs}
        self.observed = observed
        await self._write_statuses(observed)
        return True

    async def _round(self, spec: pools.PoolSpec, demand: pool_scaling.Demand) -> pools.PoolStatus:
        pool = self.executor.pools[spec.name]
        path = f"/apis/apps/v1/namespaces/{pool.namespace}/deployments/{pool_manifests.name_for(spec)}"
        deployment = await _get(self.executor.kube, path)
        desired: int | None = None
        if spec.autoscale is not None:
            desired = pool_scaling.desired(demand.total, slots=spec.slots, autoscale=spec.autoscale)
            if deployment is None and desired > 0:
                pool.ready = False  # made, or made again (deleted meanwhile)
                await self.executor.ensure(pool)
                deployment = await _get(self.executor.kube, path)
            if deployment is not None:
                await self._scale(spec, deployment, path=path, desired=desired, demand=demand)
        return await self._status(spec, deployment, demand=demand, desired=desired)

    async def _scale(self, spec: pools.PoolSpec, deployment: dict[str, Any], *, path: str, desired: int,
                     demand: pool_scaling.Demand) -> None:
        assert spec.autoscale is not None
        current = int(deployment["spec"].get("replicas", 1))
        stabilizer = self._stabilizers.setdefault(spec.name, pool_scaling.Stabilizer())
        target = stabilizer.decide(recommended=desired, current=current, now=self.clock(),
                                   delay=spec.autoscale.scale_down_delay)
        if target == current:
            return
        await self.executor.kube.call("PATCH", path, content_type="application/merge-patch+json",
                                      body={"spec": {"replicas": target}})
        deployment["spec"]["replicas"] = target
        log.info("worker pool %s: %d -> %d pods (demand %d: %d on the pool, %d queued; %d slots a pod)",
                 spec.name, current, target, demand.total, demand.active, demand.queued, spec.slots)

    async def _status(self, spec: pools.PoolSpec, deployment: dict[str, Any] | None, *,
                      demand: pool_scaling.Demand, desired: int | None) -> pools.PoolStatus:
        replicas = int((deployment or {}).get("spec", {}).get("replicas", 0))
        ready = int((deployment or {}).get("status", {}).get("readyReplicas") or 0)
        running, waiting = demand.split(capacity=ready * spec.slots)
        if deployment is None:
            condition = ("False", "NotCreated", f"its Deployment {pool_manifests.name_for(spec)} is made at the "
                         "pool's first attempt" + (" or when work arrives" if spec.autoscale else ""))
        elif replicas == 0:
            condition = ("False", "ScaledToZero", "0 pods" + (
                "; the autoscaler adds one when work for the pool arrives" if spec.autoscale else ""))
        elif ready > 0:
            condition = ("True", "PodsReady", f"{ready} of {replicas} pods ready")
        else:
            reason, message = pool_client.not_ready_reason(await self.executor.list_pods(spec.name))
            condition = ("False", reason, f"0 of {replicas} pods ready: {message}".rstrip(": "))
        status, reason, message = condition
        return pools.PoolStatus(
            replicas=replicas, ready_replicas=ready, desired_replicas=desired, slots=ready * spec.slots,
            attempts=pools.AttemptCounts(running=running, waiting=waiting, queued=demand.queued),
            conditions=[pools.Condition(type="Ready", status=status, reason=reason, message=message),
                        pools.Condition(type="Invalid", status="False", reason="SpecValid",
                                        message="the spec is a valid pool")])

    async def _write_statuses(self, observed: dict[str, Observed]) -> None:
        namespace = self.executor.defaults.namespace
        for name, item in self.executor.resources.items():
            if name in self.executor.invalid:
                why = self.executor.invalid[name]
                status = pools.PoolStatus(conditions=[
                    pools.Condition(type="Ready", status="False", reason="InvalidSpec", message=why),
                    pools.Condition(type="Invalid", status="True", reason="InvalidSpec", message=why)])
            elif name in observed and name not in self.executor.configured:
                status = observed[name].status
            elif name in self.executor.configured:
                why = "KUBELINE_KUBERNETES_POOLS declares a pool of this name, which wins: this resource is not used"
                status = pools.PoolStatus(conditions=[
                    pools.Condition(type="Ready", status="False", reason="OverriddenBySettings", message=why),
                    pools.Condition(type="Invalid", status="True", reason="OverriddenBySettings", message=why)])
            else:
                continue
            body = _with_times(status, generation=item.get("metadata", {}).get("generation"),
                               before=item.get("status") or {})
            if body == (item.get("status") or {}):
                continue
            try:
                await self.executor.kube.call(
                    "PATCH", f"{kubernetes_pool.WORKERPOOLS.format(namespace=namespace)}/{name}/status",
                    content_type="application/merge-patch+json", body={"status": body})
            except kube.ApiError as exc:
                if exc.status != 404:  # 404: deleted meanwhile; else one pool's status does not stop the others'
                    log.warning("worker pools: cannot write the status of WorkerPool %s/%s: %s", namespace, name,
                                kube.describe(exc))
                continue
            item["status"] = body


def _with_times(status: pools.PoolStatus, *, generation: int | None, before: dict[str, Any]) -> dict[str, Any]:
    """The status as the resource stores it: a condition keeps its transition time while its
    status stays the same (so an unchanged pool is not written again). An empty message would
    reach the API server as null (seen on 1.20: 422), so a condition always says something."""
    now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    previous = {c.get("type"): c for c in before.get("conditions") or []}
    conditions = []
    for condition in status.conditions:
        old = previous.get(condition.type) or {}
        at = old.get("lastTransitionTime") if old.get("status") == condition.status else None
        conditions.append(condition.model_copy(update={"last_transition_time": at or now,
                                                       "message": condition.message or condition.reason}))
    return status.model_copy(update={"observed_generation": generation, "conditions": conditions}).model_dump(
        by_alias=True, exclude_none=True, mode="json")


async def _get(api: kube.Kube, path: str) -> dict[str, Any] | None:
    try:
        return await api.call("GET", path)
    except kube.ApiError as exc:
        if exc.status == 404:
            return None
        raise
