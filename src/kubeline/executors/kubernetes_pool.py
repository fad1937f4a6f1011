"""The ``kubernetes-pool`` executor: attempts forked in warm worker pods, not a Job each.

A Job per attempt costs a pod start (about a second). A pool (``domain.pools``) is a Deployment
of worker pods (``kubernetes_pool_manifests``) each running ``runtime.worker``, which forks
every attempt from a warm interpreter with its own work dir, timeout and process group, like
``local-warm`` does on one machine. This executor creates the pool's objects on first use,
picks a ready pod (the least busy one below its ``slots``), sends the attempt (its code packed,
inputs, config, env), then long-polls its log and end (``kubernetes_pool_client``).

The executor calls the pods; the pods call nothing. From a laptop the requests go through the
API server's pod proxy (only a kubeconfig is needed, as for Jobs); a server in the cluster
talks to the pod IPs. Every request carries the pool token (a Secret the executor makes once).

What can go wrong, and what the attempt says:
- no pod ready (unschedulable, image pull, all busy): the attempt waits, its log says why,
  and it fails (START_FAILED) at the pending timeout;
- its pod is gone or restarted (killed, evicted, OOM of the worker): LOST, "worker pod lost",
  retried per the stage's policy; the worker's state was the pod's, so nothing runs twice;
- timeout and cancel: the worker kills the attempt's process group;
- a server restart: ``adopt`` asks the pool's pods which holds the attempt and resumes its log
  after the last stored line.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import logging
import secrets
import time
from typing import Any

from kubeline.domain import errors, pools, states
from kubeline.executors import base
from kubeline.executors import kubernetes_pool_client as pool_client
from kubeline.executors import kubernetes_pool_manifests as pool_manifests
from kubeline.executors.kubernetes import bundles, kube, logs, manifests

log = logging.getLogger("kubeline.executors.kubernetes_pool")
_POLL_WAIT = 20.0  # seconds a long poll may wait for news
_LOST_AFTER = 10.0  # seconds a pod may not answer (while it still exists) before its attempt is lost
_PODS_REFRESH = 1.0  # seconds between pod lists while someone waits for a pod
_REAPPLY = 10.0  # seconds without any pod of a pool before its objects are applied again
_RESOURCES_REFRESH = 10.0  # seconds between reads of the WorkerPool resources
WORKERPOOLS = "/apis/kubeline.dev/v1/namespaces/{namespace}/workerpools"  # operator.crds.workerpool_crd


@dataclasses.dataclass
class _Pool:
    spec: pools.PoolSpec
    namespace: str
    token: str = ""
    ready: bool = False
    lock: asyncio.Lock = dataclasses.field(default_factory=asyncio.Lock)
    pods: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    listed_at: float = 0.0
    busy: dict[str, int] = dataclasses.field(default_factory=dict)  # pod name -> attempts sent by us
    listing: asyncio.Task[None] | None = None
    applied_at: float = 0.0


@dataclasses.dataclass
class _Tracked:
    handle: dict[str, Any]
    sink: base.LogSink
    pool: _Pool
    request: dict[str, Any] | None = None
    pod: dict[str, Any] | None = None
    after: int = 0
    position: logs.Position = dataclasses.field(default_factory=logs.Position)
    cancelled: bool = False
    said: str = ""


class PoolExecutor:
    name = "kubernetes-pool"

    def __init__(self, *, kube_: kube.Kube, pools_: list[pools.PoolSpec], defaults: manifests.Defaults,
                 connect: str = "proxy", pending_timeout: float = 300.0, log_line_limit: int = 64 * 1024) -> None:
        self.kube = kube_
        self.defaults = defaults
        self.pools = {p.name: _Pool(spec=p, namespace=pool_manifests.namespace_for(p, defaults)) for p in pools_}
        self.client = pool_client.PoolClient(kube_=kube_, connect=connect)
        self.pending_timeout = pending_timeout
        self.log_line_limit = log_line_limit
        self.capabilities = base.Capabilities(adopt=True)
        self._tracked: dict[str, _Tracked] = {}
        self._files = pool_manifests.worker_files()
        self._background: set[asyncio.Task[Any]] = set()
        self.configured = set(self.pools)  # from settings; the rest come from WorkerPool resources
        self._resources_read = -_RESOURCES_REFRESH
        self._resources_said = ""
        self.resources: dict[str, dict[str, Any]] = {}  # WorkerPool name -> the resource as last read
        self.invalid: dict[str, str] = {}  # WorkerPool name -> why its spec is not valid

    @classmethod
    def from_settings(cls, settings: Any, *, pools_: list[pools.PoolSpec]) -> PoolExecutor:
        api = kube.load_client(settings.kubernetes_kubeconfig)
        defaults = manifests.Defaults(namespace=settings.kubernetes_namespace, image=settings.kubernetes_image)
        return cls(kube_=kube.Kube(api, workers=64), pools_=pools_, defaults=defaults,
                   connect=settings.kubernetes_pool_connect,
                   pending_timeout=settings.kubernetes_pending_timeout, log_line_limit=settings.log_line_limit)

    # pools ------------------------------------------------------------------------------
    async def read_resources(self, *, every: float = _RESOURCES_REFRESH) -> None:
        """Add the ``WorkerPool`` resources of the executor's namespace (at most every ``every`` s);
        settings win on a name clash. A cluster without the CRD, or a ServiceAccount that may not
        list them, leaves the settings' pools (said once in the log). A resource deleted since is
        no longer served; an invalid one is kept in ``invalid`` (its status says why)."""
        if time.monotonic() - self._resources_read < every:
            return
        self._resources_read = time.monotonic()
        namespace = self.defaults.namespace
        try:
            listed = await self.kube.call("GET", WORKERPOOLS.format(namespace=namespace))
        except kube.ApiError as exc:
            said = kube.describe(exc)
            if said != self._resources_said:
                log.info("no WorkerPool resources read in %s (%s); pools from KUBELINE_KUBERNETES_POOLS only",
                         namespace, said)
                self._resources_said = said
            return
        items = {item.get("metadata", {}).get("name", ""): item for item in listed.get("items") or []}
        self.resources = items
        for gone in [n for n in self.pools if n not in self.configured and n not in items]:
            del self.pools[gone]
        for name, item in items.items():
            if name in self.configured:
                continue
            try:
                found = pools.PoolSpec.model_validate({**(item.get("spec") or {}), "name": name,
                                                       "namespace": (item.get("spec") or {}).get("namespace")
                                                       or item["metadata"].get("namespace")})
            except (ValueError, KeyError) as exc:
                said = pools.describe_invalid(exc)
                if self.invalid.get(name) != said:
                    log.warning("WorkerPool %s/%s is not valid, not used: %s", namespace, name, said)
                self.invalid[name] = said
                self.pools.pop(name, None)
                continue
            self.invalid.pop(name, None)
            current = self.pools.get(name)
            if current is None or current.spec != found:
                self.pools[name] = _Pool(spec=found, namespace=pool_manifests.namespace_for(found, self.defaults))

    def pool_specs(self) -> list[pools.PoolSpec]:
        return [p.spec for p in self.pools.values()]

    async def list_pods(self, name: str) -> list[dict[str, Any]]:
        """The pods of pool ``name``, listed now."""
        return await self._pods(self.pools[name], fresh=True)

    def pool_for(self, spec: base.AttemptSpec) -> _Pool:
        try:
            chosen = pools.choose([p.spec for p in self.pools.values()], pipeline=spec.pipeline,
                                  tags=spec.tags, asked=spec.kubernetes.pool, requirements=_requirements_hash(spec))
        except ValueError as exc:
            raise errors.ExecutorError(f"stage {spec.stage_id}: {exc}") from None
        return self.pools[chosen.name]

    async def ensure(self, pool: _Pool) -> None:
        """The pool's Secret (token), ConfigMap (worker code) and Deployment exist and are current."""
        if pool.ready:
            return
        async with pool.lock:
            if pool.ready:
                return
            try:
                await self._apply(pool)
            except kube.ApiError as exc:
                raise errors.ExecutorError(
                    f"cannot create worker pool {pool.spec.name!r} in namespace {pool.namespace!r}: "
                    f"{kube.describe(exc)} (the server's ServiceAccount needs deployments, configmaps, "
                    "secrets and pods/proxy there: deploy/rbac/worker-pool.yaml)") from None
            pool.ready = True
            pool.applied_at = time.monotonic()

    async def _apply(self, pool: _Pool) -> None:
        name, ns, spec = pool_manifests.name_for(pool.spec), pool.namespace, pool.spec
        found = await self.kube.read("secrets", ns, name)
        token = pool_manifests.token_of(found) if found else None
        if token is None:
            token = secrets.token_urlsafe(32)
            body = pool_manifests.secret(spec, defaults=self.defaults, token=token)
            try:
                await self.kube.create("secrets", ns, body)
            except kube.ApiError as exc:
                if exc.status != 409:
                    raise
                token = pool_manifests.token_of(await self.kube.read("secrets", ns, name) or {}) or token
        pool.token = token
        config_map = pool_manifests.config_map(spec, defaults=self.defaults, files=self._files)
        if await self.kube.read("configmaps", ns, name) is None:
            await self.kube.create("configmaps", ns, config_map)
        else:
            await self.kube.call("PUT", self.kube.path("configmaps", ns, name), body=config_map)
        wanted = pool_manifests.deployment(spec, defaults=self.defaults, files=self._files)
        path = f"/apis/apps/v1/namespaces/{ns}/deployments"
        try:
            current = await self.kube.call("GET", f"{path}/{name}")
        except kube.ApiError as exc:
            if exc.status != 404:
                raise
            await self.kube.call("POST", path, body=wanted)
            return
        annotation = pool_manifests.HASH_ANNOTATION
        if current["metadata"].get("annotations", {}).get(annotation) != wanted["metadata"]["annotations"][annotation]:
            # replicas stay as they are (an HPA may own them); the template rolls, old pods drain
            await self.kube.call("PATCH", f"{path}/{name}", content_type="application/merge-patch+json", body={
                "metadata": {"annotations": wanted["metadata"]["annotations"]},
                "spec": {"template": wanted["spec"]["template"], "strategy": wanted["spec"]["strategy"]}})

    async def _pods(self, pool: _Pool, *, fresh: bool = False) -> list[dict[str, Any]]:
        """The pool's pods: listed now when ``fresh`` or when none is known ready; else the last
        list, refreshed in the background once it is ``_PODS_REFRESH`` s old (off the start path)."""
        if fresh or not any(pool_client.ready(p) for p in pool.pods):
            await self._list_pods(pool)
        elif time.monotonic() - pool.listed_at > _PODS_REFRESH and pool.listing is None:
            pool.listing = asyncio.get_running_loop().create_task(self._list_pods(pool))
        return pool.pods

    async def _list_pods(self, pool: _Pool) -> None:
        try:
            answer = await self.kube.call("GET", self.kube.path("pods", pool.namespace), query=[
                ("labelSelector", f"{pool_manifests.POOL_LABEL}={pool.spec.name}")])
            pool.pods = answer.get("items") or []
            pool.listed_at = time.monotonic()
        finally:
            pool.listing = None

    async def _pick(self, pool: _Pool) -> tuple[dict[str, Any] | None, str]:
        """The least busy ready pod with a free slot, else None and why there is none."""
        pods = await self._pods(pool)
        ready = [p for p in pods if pool_client.ready(p)]
        free = [p for p in ready if pool.busy.get(p["metadata"]["name"], 0) < pool.spec.slots]
        if free:
            return min(free, key=lambda p: pool.busy.get(p["metadata"]["name"], 0)), ""
        if ready:
            return None, (f"all {len(ready)} ready pods of pool {pool.spec.name!r} run {pool.spec.slots} "
                          "attempts each (its slots); waiting for a free one")
        if not pods and time.monotonic() - pool.applied_at > _REAPPLY:  # its Deployment deleted meanwhile?
            pool.ready = False
            await self.ensure(pool)
        return None, pool_client.why_not_ready(pool.spec.name, pods)

    def pool_load(self) -> dict[str, dict[str, int]]:
        """Per pool, attempts of this process waiting for a pod slot and running (``/metrics``:
        ``kubeline_pool_attempts``; pools scale on ``kubeline_pool_demand``, which sees the queue too)."""
        load = {name: {"waiting": 0, "running": 0} for name in self.pools}
        for tracked in list(self._tracked.values()):
            counts = load.setdefault(tracked.pool.spec.name, {"waiting": 0, "running": 0})
            counts["running" if tracked.pod is not None else "waiting"] += 1
        return load

    # the protocol -----------------------------------------------------------------------
    async def start(self, spec: base.AttemptSpec, sink: base.LogSink) -> dict[str, Any]:
        await self.read_resources()
        pool = self.pool_for(spec)
        script = _script_argv(spec, pool=pool.spec)
        await self.ensure(pool)
        code: bytes | None = None
        if spec.folder is not None:
            code = await asyncio.to_thread(bundles.pack, spec.folder)
        request: dict[str, Any] = {
            "attempt_id": spec.attempt_id, "argv": script, "inputs": spec.inputs, "config": spec.config,
            "env": {**spec.env, "KUBELINE_RUN_ID": spec.run_id, "KUBELINE_PIPELINE": spec.pipeline,
                    "KUBELINE_STAGE": spec.stage_id, "KUBELINE_ATTEMPT": str(spec.number),
                    "KUBELINE_ATTEMPT_ID": spec.attempt_id},
            "timeout": spec.timeout,
            "python_version": spec.python_version,
            "code_sha256": hashlib.sha256(code).hexdigest() if code is not None else "none",
            "code": pool_client.b64(code) if code is not None else None,
        }
        now = time.time()
        handle = {"attempt_id": spec.attempt_id, "pool": pool.spec.name, "namespace": pool.namespace,
                  "pod": None, "created_at": now, "pending_deadline": now + self.pending_timeout,
                  "timeout": spec.timeout}
        tracked = _Tracked(handle=handle, sink=sink, pool=pool, request=request)
        self._tracked[spec.attempt_id] = tracked
        pod, _ = await self._pick(pool)
        if pod is not None and await self._send(tracked, pod):
            handle["pod"] = pod["metadata"]["name"]
        return handle

    async def _send(self, tracked: _Tracked, pod: dict[str, Any]) -> bool:
        """Start the attempt on ``pod``; False when that pod refused (draining, gone): try another."""
        pool, name = tracked.pool, pod["metadata"]["name"]
        pool.busy[name] = pool.busy.get(name, 0) + 1
        try:
            answer = await self.client.call(pod, "POST", "/v1/attempts", token=pool.token, body=tracked.request)
        except pool_client.Unreachable as exc:
            pool.busy[name] -= 1
            pool.pods = [p for p in pool.pods if p["metadata"]["name"] != name]  # until listed again
            tracked.sink.write("system", f"pool pod {name} did not take the attempt ({exc}); trying another")
            return False
        if answer.status not in (200, 201):
            pool.busy[name] -= 1
            if answer.status in (429, 503):  # full (another replica's attempts) or draining: another pod
                pool.pods = [p for p in pool.pods if p["metadata"]["name"] != name]  # until listed again
                return False
            raise errors.ExecutorError(str(answer.body.get("error") or answer.body))
        tracked.pod = pod
        tracked.request = None  # the code and env are not kept in memory longer than needed
        tracked.sink.write("system", f"running on pod {name} of worker pool {pool.spec.name}")
        return True

    async def wait(self, handle: dict[str, Any]) -> base.AttemptResult:
        tracked = self._tracked.get(handle["attempt_id"])
        if tracked is None:
            raise errors.ExecutorError(
                f"attempt {handle['attempt_id']} is not followed by this executor; adopt it first")
        try:
            if tracked.pod is None:
                pending = await self._dispatch(tracked)
                if pending is not None:
                    return pending
            return await self._follow(tracked)
        except errors.ExecutorError as exc:
            return base.AttemptResult(exit_code=None, failure=states.FailureKind.START_FAILED, error=str(exc))
        finally:
            self._tracked.pop(handle["attempt_id"], None)
            if tracked.pod is not None:
                name = tracked.pod["metadata"]["name"]
                tracked.pool.busy[name] = max(0, tracked.pool.busy.get(name, 1) - 1)

    async def _dispatch(self, tracked: _Tracked) -> base.AttemptResult | None:
        """Wait for a pod with a free slot (saying why there is none) until the pending timeout."""
        deadline = tracked.handle["pending_deadline"]
        while tracked.pod is None:
            if tracked.cancelled:
                return base.AttemptResult(exit_code=None, failure=states.FailureKind.CANCELLED, error="cancelled")
            pod, why = await self._pick(tracked.pool)
            if pod is not None:
                if await self._send(tracked, pod):
                    break
                await asyncio.sleep(0.05)  # refused (full or draining): another pod, or a fresh list
                continue
            if why != tracked.said:
                tracked.sink.write("system", why)
                tracked.said = why
            if time.time() > deadline:
                return base.AttemptResult(exit_code=None, failure=states.FailureKind.START_FAILED,
                                          error=f"no pod of worker pool {tracked.pool.spec.name!r} took it within "
                                                f"{self.pending_timeout:g}s: {why}")
            await asyncio.sleep(0.1)
        return None

    async def _follow(self, tracked: _Tracked) -> base.AttemptResult:
        assert tracked.pod is not None
        attempt_id, pool = tracked.handle["attempt_id"], tracked.pool
        failing_since: float | None = None
        while True:
            path = f"/v1/attempts/{attempt_id}?after={tracked.after}&wait={_POLL_WAIT:g}"
            try:
                answer = await self.client.call(tracked.pod, "GET", path, token=pool.token,
                                                read_seconds=_POLL_WAIT + 10)
            except pool_client.Unreachable as exc:
                lost = await self._lost(tracked, failing_since=failing_since, why=str(exc))
                if lost is not None:
                    return lost
                failing_since = failing_since or time.monotonic()
                await asyncio.sleep(0.2)
                continue
            if answer.status == 404:  # the pod's worker does not know it: restarted, its state gone
                return _lost(tracked, "its worker restarted")
            if answer.status != 200:
                lost = await self._lost(tracked, failing_since=failing_since, why=f"{answer.status} {answer.body}")
                if lost is not None:
                    return lost
                failing_since = failing_since or time.monotonic()
                await asyncio.sleep(0.2)
                continue
            failing_since = None
            body = answer.body
            lines = [(float(at), stream, text) for at, stream, text in body["lines"]
                     if tracked.position.take(int(float(at) * 1_000_000), text)]
            logs.write_lines(tracked.sink, lines, limit=self.log_line_limit)
            tracked.after = body["next"]
            if body["state"] != "running" and len(body["lines"]) < pool_client.MAX_LINES:  # else: more to read
                self._forget(tracked)
                return _result(body)

    async def _lost(self, tracked: _Tracked, *, failing_since: float | None, why: str) -> base.AttemptResult | None:
        """LOST when the attempt's pod is gone, restarted or being deleted, or has not answered for
        ``_LOST_AFTER`` s; None while it may still answer."""
        assert tracked.pod is not None
        name = tracked.pod["metadata"]["name"]
        pods = {p["metadata"]["name"]: p for p in await self._pods(tracked.pool, fresh=True)}
        now = pods.get(name)
        if now is None:
            return _lost(tracked, "it was deleted")
        if pool_client.restarts(now) != pool_client.restarts(tracked.pod):
            return _lost(tracked, f"its container restarted ({pool_client.last_termination(now)})")
        if now["metadata"].get("deletionTimestamp") and not pool_client.ready(now):
            return _lost(tracked, "it is being deleted")
        if failing_since is not None and time.monotonic() - failing_since > _LOST_AFTER:
            return _lost(tracked, f"it has not answered for {_LOST_AFTER:g}s ({why})")
        return None

    def _forget(self, tracked: _Tracked) -> None:
        """The worker may drop the attempt's files: its result is here (off the critical path)."""
        async def forget() -> None:
            assert tracked.pod is not None
            with contextlib.suppress(pool_client.Unreachable):
                await self.client.call(tracked.pod, "DELETE", f"/v1/attempts/{tracked.handle['attempt_id']}",
                                       token=tracked.pool.token)
        task = asyncio.get_running_loop().create_task(forget())
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def cancel(self, handle: dict[str, Any]) -> None:
        tracked = self._tracked.get(handle["attempt_id"])
        if tracked is None:
            return
        tracked.cancelled = True
        if tracked.pod is not None:
            try:
                await self.client.call(tracked.pod, "DELETE", f"/v1/attempts/{handle['attempt_id']}",
                                       token=tracked.pool.token)
            except pool_client.Unreachable as exc:
                raise errors.ExecutorError(f"cannot reach pool pod {tracked.pod['metadata']['name']} to cancel "
                                           f"the attempt: {exc}") from None

    async def adopt(self, handle: dict[str, Any], sink: base.LogSink) -> bool:
        """Find which pod of the pool holds the attempt; False when none does (never sent, or lost)."""
        if handle["attempt_id"] in self._tracked:
            return True
        await self.read_resources()
        pool = self.pools.get(handle.get("pool", ""))
        if pool is None:
            return False
        await self.ensure(pool)
        for pod in await self._pods(pool, fresh=True):
            if not pod.get("status", {}).get("podIP"):
                continue
            try:
                answer = await self.client.call(pod, "GET", "/v1/attempts", token=pool.token)
            except pool_client.Unreachable:
                continue
            if answer.status == 200 and handle["attempt_id"] in answer.body.get("attempts", {}):
                tracked = _Tracked(handle=handle, sink=sink, pool=pool, pod=pod,
                                   position=await logs.stored_position(sink))
                self._tracked[handle["attempt_id"]] = tracked
                name = pod["metadata"]["name"]
                pool.busy[name] = pool.busy.get(name, 0) + 1
                return True
        return False

    async def close(self) -> None:
        """Stop following; attempts keep running in their pods (a restarted server adopts them)."""
        if self._background:  # the last forgets (a worker holds a finished attempt until then)
            await asyncio.wait(list(self._background), timeout=2.0)
        self._tracked.clear()
        self.client.close()
        self.kube.close()


def _requirements_hash(spec: base.AttemptSpec) -> str | None:
    if spec.requirements is None or not spec.requirements.is_file():
        return None
    return pools.requirements_hash(spec.requirements.read_text(encoding="utf-8", errors="replace"))


def _script_argv(spec: base.AttemptSpec, *, pool: pools.PoolSpec) -> list[str]:
    """``[script, *args]`` of a python stage a pool pod can fork; ``ExecutorError`` otherwise."""
    argv = list(spec.argv)
    rest = argv[1:] if argv[:1] == ["python"] else []
    while rest and rest[0] == "-u":
        rest = rest[1:]
    if (spec.stage_type != "python" or spec.runtime is not base.Runtime.PIPELINE or not rest
            or rest[0].startswith("-")):
        raise errors.ExecutorError(
            f"stage {spec.stage_id}: a worker pool runs python scripts only (this is a {spec.stage_type} "
            "stage); run it with executor: kubernetes")
    if spec.extra_packages:
        raise errors.ExecutorError(
            f"stage {spec.stage_id}: a worker pool cannot install packages per attempt "
            f"({', '.join(spec.extra_packages)}); run it with executor: kubernetes")
    wanted = _requirements_hash(spec)
    if wanted is not None and wanted != pool.requirements_hash:
        assert spec.requirements is not None
        has = f"installs requirements with hash {pool.requirements_hash}" if pool.requirements else "installs none"
        raise errors.ExecutorError(
            f"stage {spec.stage_id}: its requirements ({spec.requirements.name}, hash {wanted}) are not those of "
            f"worker pool {pool.name!r}, which {has}: give the pool the same requirements (requirements: [...] in "
            "its spec, the lines of the file), use a pool that has them, or run it with executor: kubernetes")
    if spec.env_from:
        raise errors.ExecutorError(f"stage {spec.stage_id}: valueFrom env is not available on a worker pool; "
                                   "store the value as a Kubeline secret, or run it with executor: kubernetes")
    return rest


def _lost(tracked: _Tracked, why: str) -> base.AttemptResult:
    pod = tracked.pod["metadata"]["name"] if tracked.pod else "?"
    return base.AttemptResult(exit_code=None, failure=states.FailureKind.LOST,
                              error=f"worker pod lost: pod {pod} of pool {tracked.pool.spec.name!r} {why}")


def _result(body: dict[str, Any]) -> base.AttemptResult:
    failure = body.get("failure")
    if failure is None:
        return base.AttemptResult(exit_code=body.get("exit_code"), outputs=body.get("outputs") or {},
                                  route=body.get("route"))
    try:
        kind = states.FailureKind(failure)
    except ValueError:
        kind = states.FailureKind.EXIT_CODE
    return base.AttemptResult(exit_code=body.get("exit_code"), failure=kind, error=body.get("error") or failure)
