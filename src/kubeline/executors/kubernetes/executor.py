"""The Kubernetes executor: one ``batch/v1`` Job per attempt, followed by watches, never hung.

``start`` creates the attempt's Secret (secret env, attempt token; only when it has secret env or
uploads its result, ``manifests.needs_secret``) and, for bundles too large to
travel inline in the Job (``manifests.inline_bundle``), a ConfigMap (code, inputs, config,
entrypoint); then the Job, then makes the Job their owner. A folder too large for either is
copied to the code volume (``code_volume``, when ``code_dir`` and ``Defaults.code_claim`` are
set) and mounted from there; a folder baked into the image (``kubernetes.codePath``) is not
sent at all.

``wait`` judges what the namespace's watches report (``reasons.judge``): success, exit code,
OOM, deadline, eviction, a lost node, or a pod that cannot start (fails at once, or when the
pending timeout runs out; its Job is deleted). Outputs come back through the Kubeline API: the pod PUTs them with its
attempt token to ``/api/v1/attempts/{id}/io`` (``api.routes.attempt_io``), which stores them
with the attempt; ``wait`` reads them from the store, so the server that receives the upload
need not be the one that started the Job. Only the token's SHA-256 is kept (in the handle).

Seeing the end sooner: the kubelet reports a container's exit only at its next relist (every
second), so a short attempt would wait up to a second for its pod status. While a bound pod is
young, ``wait`` also looks for its upload in the store (every 20 ms for 5 s, then every 0.5 s for
a minute); an upload means the stage exited 0 and its outputs are stored. An upload may carry
the stage's log (the kubelet serves the pod log only after its next relist): the attempt then
succeeds at once, provided none of the pod log was copied yet. Otherwise (and with the bundled
entrypoint, which does not send its log) it succeeds once its log has been read up to the
entrypoint's end markers.

While an attempt's pod runs, its CPU/memory come from ``metrics.k8s.io`` when the cluster has
that API (``metrics``; sampled every ``metrics_interval`` s, soft limits warned about in the log);
``resource_usage`` answers the API's question "how much does it use", or says why it cannot.

``cancel`` deletes the Job (propagation Foreground: its pod, ConfigMap and Secret go with it).
``adopt`` re-attaches to a Job by name after a restart and resumes its log after the last
stored line. ``close`` stops following and leaves Jobs running.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import contextlib
import dataclasses
import functools
import hashlib
import logging
import pathlib
import secrets
import time
from typing import Any, Protocol

from kubeline.domain import errors, runs, states
from kubeline.executors import base
from kubeline.executors.kubernetes import (
    bundles,
    code_volume,
    kube,
    logs,
    manifests,
    metrics,
    reasons,
    tracking,
    watches,
)
from kubeline.runtime import pod as pod_entry
from kubeline.runtime import results

log = logging.getLogger("kubeline.executors.kubernetes")
_IDLE_REFRESH = 30.0  # seconds without an event before the attempt's objects are re-read
_OUTPUTS_WAIT = 5.0  # seconds to wait for an upload recorded after the pod's exit (clock skew)
_REST_QUIET = 0.5  # seconds of reads bringing nothing new before a log without end markers is complete
# The same when the end markers are due: one stream's marker was read (the other must follow), or
# the entrypoint exited by itself (it prints them before it does). The container's exit does not
# mean its output is in the log file: the runtime copies what is left in the pipes (up to 64 KiB a
# stream) after it, which on a loaded node can stall past 0.5 s, and the log then lost its end
# (CI twice lost lines of a 200,000-line log; once its end at least).
_REST_QUIET_DUE = 10.0
_REST_FAILURES = 20  # failed reads of the rest of a log before giving up on it
_UPLOAD_POLLS = ((5.0, 0.02), (60.0, 0.5))  # (pod age up to, look for its upload every) seconds


class AttemptReader(Protocol):
    """The slice of the Store this executor needs (outputs and route are stored by the API)."""

    async def get_attempt(self, attempt_id: str) -> runs.Attempt: ...


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class KubernetesExecutor:
    name = "kubernetes"

    def __init__(self, *, kube_: kube.Kube, defaults: manifests.Defaults,
                 attempts: AttemptReader | None, pending_timeout: float = 300.0,
                 log_line_limit: int = 64 * 1024, kill_wait: float = 10.0,
                 log_drain: float = 120.0, metrics_interval: float = 15.0,
                 code_dir: pathlib.Path | None = None) -> None:
        self.kube = kube_
        self.defaults = defaults
        self.code_dir = code_dir  # where this process mounts ``defaults.code_claim``
        self._uv_cache_ready = False
        self.attempts = attempts
        self.pending_timeout = pending_timeout
        self.log_line_limit = log_line_limit
        self.kill_wait = kill_wait
        self.log_drain = log_drain
        self.capabilities = base.Capabilities(adopt=True, memory_limit=True, cpu_limit=True)
        self._tracked: dict[str, tracking.Tracked] = {}
        self._watches: dict[str, watches.NamespaceWatch] = {}
        self._log_pool = concurrent.futures.ThreadPoolExecutor(256, thread_name_prefix="kubeline-k8s-log")
        self._entrypoint = pathlib.Path(pod_entry.__file__).read_text()
        self.metrics = metrics.Metrics(kube_)
        self.metrics_interval = metrics_interval
        self._sampler: asyncio.Task[None] | None = None
        self._finished_usage: collections.OrderedDict[str, metrics.Usage] = collections.OrderedDict()

    @classmethod
    def from_settings(cls, settings: Any, *, attempts: AttemptReader | None,
                      **kwargs: Any) -> KubernetesExecutor:
        """Cluster access, namespace, image and the pods' URL of the API from ``Settings``."""
        api = kube.load_client(settings.kubernetes_kubeconfig)
        defaults = manifests.Defaults(
            namespace=settings.kubernetes_namespace, image=settings.kubernetes_image,
            service_account=settings.kubernetes_service_account,
            api_url=settings.kubernetes_api_url or None,
            ttl_seconds=settings.kubernetes_ttl_seconds,
            uv_cache_claim=settings.kubernetes_uv_cache_claim, code_claim=settings.kubernetes_code_claim)
        return cls(kube_=kube.Kube(api), defaults=defaults, attempts=attempts,
                   pending_timeout=settings.kubernetes_pending_timeout,
                   log_line_limit=settings.log_line_limit, code_dir=settings.kubernetes_code_dir, **kwargs)

    # starting ---------------------------------------------------------------------------
    async def start(self, spec: base.AttemptSpec, sink: base.LogSink) -> dict[str, Any]:
        if not spec.argv:
            raise errors.ExecutorError(f"stage {spec.stage_id}: nothing to run (empty argv)")
        namespace = manifests.namespace_for(spec, self.defaults)
        code, code_sub_path = await self._place_code(spec, sink)
        code_dir = manifests.code_dir_for(spec, code_sub_path=code_sub_path)
        requirements = None
        if spec.requirements is not None and spec.requirements.is_file():
            requirements = spec.requirements.read_text()
        token = secrets.token_urlsafe(32)
        inline = manifests.inline_bundle(spec, entrypoint=self._entrypoint, code=code, requirements=requirements,
                                         code_dir=code_dir)
        config_map = None if inline is not None else manifests.config_map(
            spec, defaults=self.defaults, entrypoint=self._entrypoint, code=code, requirements=requirements,
            code_dir=code_dir)
        with_secret = manifests.needs_secret(spec, defaults=self.defaults)
        secret = manifests.secret(spec, defaults=self.defaults, token=token) if with_secret else None
        job = manifests.job(spec, defaults=self.defaults, inline=inline, code_sub_path=code_sub_path,
                            frame_key=None if with_secret else token)
        name = job["metadata"]["name"]
        now = time.time()
        handle: dict[str, Any] = {
            "attempt_id": spec.attempt_id, "namespace": namespace, "job": name,
            # without a Secret the token is in the Job: then it must authorize no upload
            "token_sha256": token_digest(token) if with_secret else "", "created_at": now,
            "end_markers": [pod_entry.end_marker(token, stream) for stream in ("stdout", "stderr")],
            "result_tag": results.line_tag(token),
            "pending_deadline": now + self.pending_timeout, "timeout": spec.timeout,
            "memory_limit": spec.resources.limits.memory,
            "soft_memory": spec.resources.soft_limits.memory, "soft_cpu": spec.resources.soft_limits.cpu,
        }
        await self._watch(namespace)
        tracked = self._track(handle, sink, logs.Position())
        try:
            bodies: dict[str, Any] = {}
            if secret is not None:
                bodies["secrets"] = secret
            if config_map is not None:
                bodies["configmaps"] = config_map
            await asyncio.gather(*(self.kube.create(kind, namespace, body) for kind, body in bodies.items()))
            created = await self.kube.create("jobs", namespace, job)
        except Exception as exc:
            self._untrack(tracked)
            with contextlib.suppress(Exception):
                await asyncio.gather(*(self.kube.delete(kind, namespace, name, propagation="Background")
                                       for kind in ("jobs", "configmaps", "secrets")))
            raise errors.ExecutorError(
                f"stage {spec.stage_id}: cannot create its Job in namespace {namespace!r}: "
                f"{kube.describe(exc)}") from None
        # The Job owns its Secret (and ConfigMap) from now on; off the attempt's critical path,
        # since the pod needs them to exist, not to be owned (``adopt`` makes sure again).
        tracked.owner_task = asyncio.create_task(self._own(created, kinds=list(bodies)))
        tracked.log_task = asyncio.create_task(self._follow_logs(tracked))
        self._start_sampler()
        return handle

    async def _own(self, job: dict[str, Any], *, kinds: list[str]) -> None:
        """Make ``job`` the owner of its attempt's other objects (deleted with it); a failure is
        logged, never raised: the attempt runs on either way."""
        meta = job["metadata"]
        owner = {"metadata": {"ownerReferences": [manifests.owner_reference(job)]}}
        for kind in kinds:
            try:
                await self.kube.patch(kind, meta["namespace"], meta["name"], owner)
            except kube.ApiError as exc:
                if exc.status != 404:  # gone already: nothing left to own
                    log.warning("cannot make Job %s/%s the owner of its %s: %s (delete it with the "
                                "Job)", meta["namespace"], meta["name"], kind[:-1], kube.describe(exc))

    async def _place_code(self, spec: base.AttemptSpec, sink: base.LogSink) -> tuple[bytes | None, str | None]:
        """The packed folder for the bundle, or (too large for it) the ``subPath`` of its copy on
        the code claim; neither for folderless pipelines and folders baked into the image."""
        claim, root = self.defaults.code_claim, self.code_dir
        if claim and root is not None and not self.defaults.uv_cache_claim and not self._uv_cache_ready:
            await asyncio.to_thread(code_volume.ensure_uv_cache, root)
            self._uv_cache_ready = True
        if spec.folder is None or spec.kubernetes.code_path:
            return None, None
        try:
            return await asyncio.to_thread(bundles.pack, spec.folder), None
        except bundles.TooLarge:
            if not claim or root is None:
                raise
        sub_path = await asyncio.to_thread(code_volume.publish, spec.folder, root=root, pipeline=spec.pipeline)
        sink.write("system", f"the pipeline folder is too large for a ConfigMap: mounted read-only from "
                             f"PVC {claim}, {sub_path}")
        return None, sub_path

    def _track(self, handle: dict[str, Any], sink: base.LogSink, position: logs.Position) -> tracking.Tracked:
        tracked = tracking.Tracked(handle=handle, sink=sink, position=position)
        self._tracked[manifests.label_value(handle["attempt_id"])] = tracked
        return tracked

    def _untrack(self, tracked: tracking.Tracked) -> None:
        key = manifests.label_value(tracked.handle["attempt_id"])
        if self._tracked.get(key) is tracked:
            del self._tracked[key]

    async def _watch(self, namespace: str) -> None:
        watch = self._watches.get(namespace)
        if watch is None:
            watch = watches.NamespaceWatch(kube_=self.kube, namespace=namespace,
                                           loop=asyncio.get_running_loop(), on_event=self._on_event,
                                           on_listed=self._on_listed)
            self._watches[namespace] = watch
            watch.start()
        try:
            await watch.ready()
        except errors.ExecutorError:
            watch.stop()
            self._watches.pop(namespace, None)
            raise

    def _on_event(self, kind: str, event: str, obj: dict[str, Any]) -> None:
        attempt = obj.get("metadata", {}).get("labels", {}).get(manifests.ATTEMPT_LABEL)
        tracked = self._tracked.get(attempt or "")
        if tracked is not None:
            tracked.apply(kind, event, obj)

    def _on_listed(self, kind: str, present: set[str]) -> None:
        for key, tracked in list(self._tracked.items()):
            if key not in present:
                tracked.missing(kind)

    # waiting ----------------------------------------------------------------------------
    async def wait(self, handle: dict[str, Any]) -> base.AttemptResult:
        tracked = self._tracked.get(manifests.label_value(handle["attempt_id"]))
        if tracked is None:
            raise errors.ExecutorError(
                f"attempt {handle['attempt_id']} is not followed by this executor; adopt it first")
        try:
            result = await self._judge_until_final(tracked)
            tracked.finished = True
            upload = None
            if result.succeeded and self.attempts is not None:
                upload = (await self.attempts.get_attempt(handle["attempt_id"])).handle.get("io")
                if upload is not None and upload.get("log") is not None \
                        and self._log_from_upload(tracked, upload["log"]):
                    return _uploaded(upload, await self.attempts.get_attempt(handle["attempt_id"]))
            await self._drain_logs(tracked, cancelled=result.failure is states.FailureKind.CANCELLED)
            if result.succeeded:
                result = await self._with_outputs(tracked, upload)
            return result
        finally:
            tracked.finished = True
            self._untrack(tracked)
            if tracked.owner_task is not None:
                await asyncio.shield(tracked.owner_task)
            if tracked.usage is not None:
                self._remember_usage(handle["attempt_id"], tracked.usage)

    async def _judge_until_final(self, tracked: tracking.Tracked) -> base.AttemptResult:
        handle = tracked.handle
        last_event = time.monotonic()
        while True:
            generation = tracked.generation
            if tracked.cancelled:
                return base.AttemptResult(exit_code=None, failure=states.FailureKind.CANCELLED,
                                          error="was cancelled")
            now = time.time()
            verdict = reasons.judge(tracked.seen, now=now, pending_deadline=handle.get("pending_deadline"),
                                    pending_timeout=self.pending_timeout, timeout=handle.get("timeout"),
                                    memory_limit=handle.get("memory_limit"))
            if verdict.result is None and not verdict.waiting_for_job and tracked.uploaded:
                return base.AttemptResult(exit_code=0)  # exited 0 after its upload; pod status lags
            if verdict.waiting_for_job:
                tracked.killed_at = tracked.killed_at or now
                if now - tracked.killed_at >= self.kill_wait:
                    status = reasons.container_status(tracked.seen.pod) or {}
                    return reasons.terminated_result(status["state"]["terminated"],
                                                     memory_limit=handle.get("memory_limit"))
            if verdict.result is None and not tracked.references_checked and reasons.config_waiting(tracked.seen):
                tracked.references_checked = True
                problem = await self.missing_reference(
                    tracked.handle["namespace"], tracked.seen.pod,
                    own=manifests.name_for(tracked.handle["attempt_id"]))
                if problem is not None:
                    verdict = reasons.cannot_start(tracked.seen, problem)
            if verdict.result is not None:
                if verdict.delete:
                    await self._delete(tracked, why=verdict.result.error)
                return verdict.result
            poll = self._upload_poll(tracked, now)
            await tracked.changed(generation, _pause(handle, verdict, now=now, poll=poll))
            if poll is not None and tracked.generation == generation:
                await self._look_for_upload(tracked)
            if tracked.generation != generation:
                last_event = time.monotonic()
            elif time.monotonic() - last_event >= _IDLE_REFRESH:
                last_event = time.monotonic()
                await self._refresh(tracked)

    async def missing_reference(self, namespace: str, pod: dict[str, Any] | None, *, own: str) -> str | None:
        """Which Secret or ConfigMap (or key) the pod refers to is missing, if one is. The kubelet
        says so only after its own cache sync times out and a back-off passes (tens of seconds
        under load); one read each says it now. None when all are there or they cannot be read.
        ``own``: the attempt's Secret, made before its Job."""
        for ref in reasons.references(pod, skip=own):
            try:
                obj = await self.kube.read(ref.kind, namespace, ref.name)
            except kube.ApiError as exc:
                log.warning("cannot read %s %s/%s to explain a config error: %s", ref.kind, namespace,
                            ref.name, kube.describe(exc))
                return None
            problem = reasons.reference_problem(ref, obj, namespace=namespace)
            if problem is not None:
                return problem
        return None

    def _upload_poll(self, tracked: tracking.Tracked, now: float) -> float | None:
        """How often to look for the upload of a bound, unfinished pod (None: rely on the watch)."""
        pod = tracked.seen.pod
        if self.attempts is None or not self.defaults.api_url or tracked.uploaded or pod is None \
                or not pod.get("spec", {}).get("nodeName") or _terminated(pod):
            return None
        tracked.bound_at = tracked.bound_at or now
        for age, every in _UPLOAD_POLLS:
            if now - tracked.bound_at <= age:
                return max(every, 0.01 * len(self._tracked))  # many attempts: fewer queries each
        return None

    async def _look_for_upload(self, tracked: tracking.Tracked) -> None:
        assert self.attempts is not None
        attempt = await self.attempts.get_attempt(tracked.handle["attempt_id"])
        if "io" in attempt.handle:
            tracked.uploaded = True
            tracked.notify()

    async def _refresh(self, tracked: tracking.Tracked) -> None:
        """Re-read the Job and its pod (a safety net should a watch stall silently)."""
        namespace, name = tracked.handle["namespace"], tracked.handle["job"]
        try:
            job = await self.kube.read("jobs", namespace, name)
            pods = await self.kube.call("GET", self.kube.path("pods", namespace), query=[
                ("labelSelector", f"{manifests.ATTEMPT_LABEL}={manifests.label_value(tracked.handle['attempt_id'])}")])
        except kube.ApiError as exc:
            log.warning("cannot re-read Job %s/%s: %s", namespace, name, kube.describe(exc))
            return
        if job is None:
            tracked.missing("jobs")
        else:
            tracked.apply("jobs", "MODIFIED", job)
        for pod in pods.get("items", []):
            tracked.apply("pods", "MODIFIED", pod)

    async def _with_outputs(self, tracked: tracking.Tracked, upload: dict[str, Any] | None) -> base.AttemptResult:
        """The result with its outputs and route: from the result lines of the pod log, else
        from the upload the API stored; a failure saying why when there is neither."""
        reader = tracked.follower.reader if tracked.follower is not None else None
        if reader is not None and reader.delivery == results.RESULT:
            try:
                body = reader.body()
            except results.ResultError as exc:
                return base.AttemptResult(exit_code=0, failure=states.FailureKind.EXIT_CODE, error=str(exc))
            return base.AttemptResult(exit_code=0, outputs=dict(body.get("outputs") or {}),
                                      route=body.get("route"))
        attempt_id = tracked.handle["attempt_id"]
        waits = self.attempts is not None and (bool(self.defaults.api_url) or (
            reader is not None and reader.delivery == results.UPLOADED))
        give_up = time.monotonic() + (_OUTPUTS_WAIT if waits else 0.0)
        while self.attempts is not None:
            attempt = await self.attempts.get_attempt(attempt_id)
            upload = attempt.handle.get("io")
            if upload is not None:
                return _uploaded(upload, attempt)
            if time.monotonic() >= give_up:
                break
            await asyncio.sleep(0.1)
        where = f"nor uploaded to the Kubeline API at {self.defaults.api_url}" if self.defaults.api_url \
            else "and no upload URL was given"
        return base.AttemptResult(
            exit_code=0, failure=states.FailureKind.EXIT_CODE,
            error=f"the pod exited 0 but handed back no result: none in its log {where} (was the "
                  "pod log lost, or the image's entrypoint replaced? Kubeline's pod entrypoint must run)")

    def _log_from_upload(self, tracked: tracking.Tracked, lines: list[Any]) -> bool:
        """Take the attempt's log from its upload, unless some of the pod log was copied already
        (by this process or, before a restart, another: then the pod log is read to its end
        markers). Runs on the loop, where the log task's lines arrive too, so the log comes from
        exactly one of the two."""
        follower = tracked.follower
        if tracked.position.last_us >= 0 or (follower is not None and follower.delivered):
            return False
        if follower is not None:
            follower.discard()
        if tracked.log_task is not None:
            tracked.log_task.cancel()
        logs.write_lines(tracked.sink, [(float(at), stream, text) for at, stream, text in lines],
                         limit=self.log_line_limit)
        return True

    async def _delete(self, tracked: tracking.Tracked, *, why: str) -> None:
        tracked.deleting = True
        namespace, name = tracked.handle["namespace"], tracked.handle["job"]
        tracked.sink.write("system", f"deleting Job {namespace}/{name}: {why}")
        try:
            await self.kube.delete("jobs", namespace, name)
        except kube.ApiError as exc:
            log.warning("cannot delete Job %s/%s: %s", namespace, name, kube.describe(exc))

    # logs -------------------------------------------------------------------------------
    async def _follow_logs(self, tracked: tracking.Tracked) -> None:
        """Copy the pod log into the sink: follow it while the container runs, then (the exit
        learnt from the pod status, never from the follow closing) read the rest, bounded."""
        loop = asyncio.get_running_loop()
        namespace = tracked.handle["namespace"]
        while True:
            generation = tracked.generation
            pod = tracked.seen.pod
            if tracked.cancelled or tracked.seen.pod_gone or tracked.seen.job_gone:
                return
            completed = reasons.job_completed(tracked.seen.job)  # its pod ran, whatever the pod event says
            if pod is None or not (reasons.has_started(pod) or tracked.uploaded or completed):
                if tracked.finished and not completed:
                    return
                await tracked.changed(generation, 1.0)  # a completed Job's pod event follows
                continue
            name = pod["metadata"]["name"]
            if tracked.follower is None or tracked.follower.pod != name:
                tracked.follower = logs.Follower(kube_=self.kube, namespace=namespace, pod=name,
                                                 sink=tracked.sink, loop=loop, position=tracked.position,
                                                 line_limit=self.log_line_limit,
                                                 end_markers=tracked.handle.get("end_markers", ()),
                                                 result_tag=tracked.handle.get("result_tag"))
            follower = tracked.follower
            if _terminated(pod) or tracked.finished:
                await self._read_rest(tracked, follower)
                return
            try:
                await self._follow_once(tracked, follower)
            except Exception as exc:  # a broken or stalled stream: reopen it after the last line
                if isinstance(exc, kube.ApiError) and exc.status == 404:
                    return  # the pod is gone
                if not _terminated(tracked.seen.pod):
                    await asyncio.sleep(0.05 if tracked.uploaded else 0.3)
            if follower.ended:  # every stream's end marker read: the log is complete
                self._log_complete(tracked)
                return
            if not _terminated(tracked.seen.pod):  # ended early (rotation, API restart): reopen
                await tracked.changed(tracked.generation, 0.2)

    async def _follow_once(self, tracked: tracking.Tracked, follower: logs.Follower) -> None:
        """One follow, until it ends, or until the pod status says the container exited or the
        attempt has its verdict (a Job past its deadline): then it is interrupted, as containerd
        may never close it."""
        reading = asyncio.get_running_loop().run_in_executor(self._log_pool, follower.run_once)
        while not reading.done():
            if _terminated(tracked.seen.pod) or tracked.finished or tracked.cancelled or tracked.seen.pod_gone:
                follower.interrupt()  # again every 0.2 s: it may come before the stream is open
                await asyncio.wait([reading], timeout=0.2)
                continue
            waiter = asyncio.ensure_future(tracked.changed(tracked.generation, 1.0))
            either: set[asyncio.Future[Any]] = {reading, waiter}
            await asyncio.wait(either, return_when=asyncio.FIRST_COMPLETED)
            waiter.cancel()
        reading.result()

    async def _read_rest(self, tracked: tracking.Tracked, follower: logs.Follower) -> None:
        """After the container's exit: read the log without follow, after the last line taken,
        until both end markers are read; without them, until reads bring nothing new for
        ``_REST_QUIET_DUE`` s when they are due, else (a killed entrypoint) ``_REST_QUIET`` s."""
        loop = asyncio.get_running_loop()
        quiet_since: float | None = None
        failures = 0
        while not follower.ended:
            if tracked.seen.pod_gone or (tracked.cancelled and quiet_since is not None):
                return
            try:
                taken = await loop.run_in_executor(self._log_pool, functools.partial(follower.run_once, follow=False))
            except Exception as exc:
                if isinstance(exc, kube.ApiError) and exc.status == 404:
                    return
                failures += 1
                if failures > _REST_FAILURES:
                    log.warning("cannot read the rest of pod %s's log: %s", follower.pod, kube.describe(exc))
                    return
                await asyncio.sleep(0.2)
                continue
            if follower.ended:
                break
            now = time.monotonic()
            if taken:
                quiet_since = None
                continue
            quiet_since = quiet_since or now
            due = follower.reader.seen or (bool(follower.reader.markers) and reasons.exited_by_itself(tracked.seen.pod))
            if now - quiet_since >= (_REST_QUIET_DUE if due else _REST_QUIET):
                return
            await asyncio.sleep(0.05)
        self._log_complete(tracked)

    def _log_complete(self, tracked: tracking.Tracked) -> None:
        """Every end marker (and result line) read: the stage exited; with its result delivered,
        the attempt succeeded (``wait`` need not wait for the kubelet to report the exit)."""
        follower = tracked.follower
        if follower is not None and follower.reader.delivery in (results.RESULT, results.UPLOADED):
            tracked.uploaded = True
        tracked.notify()

    async def _drain_logs(self, tracked: tracking.Tracked, *, cancelled: bool) -> None:
        task = tracked.log_task
        if task is None:
            return
        try:
            await asyncio.wait_for(asyncio.shield(task), 2.0 if cancelled else self.log_drain)
        except TimeoutError:
            if tracked.follower is not None:
                tracked.follower.stop()
            task.cancel()
        await asyncio.sleep(0)  # the last batch handed over by the reader thread

    # cancel, adopt, close ---------------------------------------------------------------
    async def cancel(self, handle: dict[str, Any]) -> None:
        tracked = self._tracked.get(manifests.label_value(handle["attempt_id"]))
        if tracked is not None:
            tracked.cancelled = tracked.deleting = True
            tracked.notify()
        try:
            await self.kube.delete("jobs", handle["namespace"], handle["job"])
        except kube.ApiError as exc:
            raise errors.ExecutorError(f"cannot delete Job {handle['namespace']}/{handle['job']}: "
                                       f"{kube.describe(exc)}") from None

    async def adopt(self, handle: dict[str, Any], sink: base.LogSink) -> bool:
        key = manifests.label_value(handle["attempt_id"])
        if key in self._tracked:
            return True
        namespace = handle["namespace"]
        await self._watch(namespace)
        tracked = self._track(handle, sink, await logs.stored_position(sink))
        job = await self.kube.read("jobs", namespace, handle["job"])
        if job is None:
            uploaded = False
            if self.attempts is not None:
                uploaded = "io" in (await self.attempts.get_attempt(handle["attempt_id"])).handle
            if not uploaded:
                self._untrack(tracked)
                return False
            sink.write("system", "its Job finished and was removed while Kubeline was down; "
                                 "output after the restart is not in this log")
            job = {"metadata": {"name": handle["job"]},
                   "status": {"conditions": [{"type": "Complete", "status": "True"}]}}
            tracked.apply("jobs", "MODIFIED", job)
            return True
        tracked.apply("jobs", "MODIFIED", job)
        await self._refresh(tracked)
        if job.get("metadata", {}).get("uid"):  # a restart right after the Job's creation: own again
            tracked.owner_task = asyncio.create_task(self._own(job, kinds=["secrets", "configmaps"]))
        tracked.log_task = asyncio.create_task(self._follow_logs(tracked))
        self._start_sampler()
        return True

    async def close(self) -> None:
        """Stop following; running Jobs keep running (a restarted server adopts them)."""
        if self._sampler is not None:
            self._sampler.cancel()
        for watch in self._watches.values():
            watch.stop()
        self._watches.clear()
        for tracked in list(self._tracked.values()):
            if tracked.follower is not None:
                tracked.follower.stop()
            if tracked.log_task is not None:
                tracked.log_task.cancel()
        self._tracked.clear()
        self._log_pool.shutdown(wait=False, cancel_futures=True)
        self.kube.close()


    # resource usage ---------------------------------------------------------------------
    def _start_sampler(self) -> None:
        if self._sampler is None or self._sampler.done():
            self._sampler = asyncio.create_task(self._sample_forever())

    async def _sample_forever(self) -> None:
        """Every ``metrics_interval`` s, sample each running attempt's pod (when the API exists)."""
        while self._tracked:
            if await self.metrics_available():
                for tracked in list(self._tracked.values()):
                    pod = tracked.seen.pod
                    if pod is not None and reasons.has_started(pod) and not _terminated(pod):
                        sample = await self.metrics.pod(tracked.handle["namespace"], pod["metadata"]["name"])
                        if sample is not None:
                            self._record(tracked, sample)
            await asyncio.sleep(self.metrics_interval)

    async def metrics_available(self) -> bool:
        """Whether the cluster serves metrics.k8s.io (``capabilities.resource_metrics`` follows)."""
        found = await self.metrics.available()
        if found != self.capabilities.resource_metrics:
            self.capabilities = dataclasses.replace(self.capabilities, resource_metrics=found)
        return found

    def _record(self, tracked: tracking.Tracked, sample: metrics.Usage) -> None:
        tracked.usage = sample if tracked.usage is None else tracked.usage.with_sample(sample)
        for warning in metrics.soft_limit_warnings(tracked.handle, tracked.usage, already=tracked.warned):
            tracked.sink.write("system", warning)

    def _remember_usage(self, attempt_id: str, usage: metrics.Usage) -> None:
        self._finished_usage[attempt_id] = usage
        while len(self._finished_usage) > 1000:
            self._finished_usage.popitem(last=False)

    async def resource_usage(self, handle: dict[str, Any], *, running: bool) -> dict[str, Any]:
        """The API's ``resources`` of an attempt: latest CPU cores, memory and peak memory bytes,
        or ``available: False`` with the reason (no metrics API, pod not running, no sample yet)."""
        if not await self.metrics_available():
            return metrics.report(None, reason=metrics.NO_API)
        attempt_id = str(handle.get("attempt_id", ""))
        tracked = self._tracked.get(manifests.label_value(attempt_id))
        usage = tracked.usage if tracked is not None else self._finished_usage.get(attempt_id)
        if usage is None and running and "namespace" in handle:
            pod = tracked.seen.pod if tracked is not None else await self._find_pod(handle)
            if pod is None or not reasons.has_started(pod) or _terminated(pod):
                return metrics.report(None, reason=metrics.NOT_RUNNING)
            usage = await self.metrics.pod(handle["namespace"], pod["metadata"]["name"])
            if usage is not None and tracked is not None:
                self._record(tracked, usage)
        return metrics.report(usage, reason=metrics.NO_SAMPLE if running else metrics.NOT_RUNNING)

    async def _find_pod(self, handle: dict[str, Any]) -> dict[str, Any] | None:
        """The attempt's pod when another replica follows it."""
        try:
            pods = await self.kube.call("GET", self.kube.path("pods", handle["namespace"]), query=[
                ("labelSelector", f"{manifests.ATTEMPT_LABEL}={manifests.label_value(handle['attempt_id'])}")])
        except kube.ApiError:
            return None
        items: list[dict[str, Any]] = pods.get("items") or []
        return items[-1] if items else None


def _uploaded(upload: dict[str, Any], attempt: runs.Attempt) -> base.AttemptResult:
    return base.AttemptResult(exit_code=0, outputs=dict(attempt.outputs), route=upload.get("route"))


def _pause(handle: dict[str, Any], verdict: reasons.Verdict, *, now: float, poll: float | None) -> float:
    """How long ``wait`` may sleep before it must look again (if no event wakes it first)."""
    pause = _IDLE_REFRESH
    if not verdict.started and handle.get("pending_deadline"):
        pause = min(pause, max(0.05, handle["pending_deadline"] - now + 0.05))
    if verdict.waiting_for_job:
        pause = min(pause, 1.0)
    return pause if poll is None else min(pause, poll)


def _terminated(pod: dict[str, Any] | None) -> bool:
    status = reasons.container_status(pod) or {}
    return "terminated" in (status.get("state") or {})
