"""What the operator does for each resource, without kopf: the handlers only call these.

``sync_pipeline`` / ``remove_pipeline`` keep the store in step with Pipeline resources;
``follow_run`` turns a PipelineRun into a run (once: the run id is written to the status first,
and a run already made for this resource's uid is found again after a restart) and writes its
progress back until it ends. Problems never raise out of here unhandled: ``Retry`` (try again
after ``delay``; the status says why) and ``GiveUp`` (the status says why, nothing more to do) are
the two outcomes a handler turns into kopf errors and events.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import logging
import pathlib
import subprocess
import tempfile
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Protocol

from kubeline import bootstrap, k8s
from kubeline.domain import errors, runs, states
from kubeline.operator import convert, resources

log = logging.getLogger(__name__)
PIPELINE_WAIT_SECONDS = 60.0  # a PipelineRun waits this long for its Pipeline to appear
Sleep = Callable[[float], Awaitable[bool]]  # returns True when asked to stop


class Retry(Exception):
    def __init__(self, reason: str, message: str, *, delay: float = 10.0) -> None:
        super().__init__(message)
        self.reason, self.message, self.delay = reason, message, delay


class GiveUp(Exception):
    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason, self.message = reason, message


class Kube(Protocol):
    """What the operator needs of the API server (``k8s.PipelineClient``; ``testing.clusters.MemoryCluster``)."""

    def get_pipeline(self, name: str, *, namespace: str | None = None) -> dict[str, Any]: ...
    def patch_status(self, plural: str, name: str, status: dict[str, Any], *,
                     namespace: str | None = None) -> dict[str, Any]: ...
    def read_config_map(self, name: str, *, namespace: str | None = None) -> dict[str, bytes]: ...
    def read_secret(self, name: str, *, namespace: str | None = None) -> dict[str, bytes]: ...


@dataclasses.dataclass
class Context:
    kl: bootstrap.Kubeline
    kube: Kube
    is_leader: Callable[[], bool] = lambda: True
    poll_seconds: float = 1.0

    async def call(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        return await asyncio.to_thread(fn, *args, **kwargs)


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


# Pipelines ------------------------------------------------------------------------------------
async def read_source(ctx: Context, source: resources.SourceSpec | None, *, namespace: str) -> dict[str, bytes]:
    if source is None:
        return {}
    if source.inline is not None:
        return convert.source_files({k: v.encode() for k, v in source.inline.items()})
    if source.config_map is not None:
        ref = source.config_map
        try:
            return convert.source_files(await ctx.call(ctx.kube.read_config_map, ref.name, namespace=namespace))
        except errors.NotFoundError:
            if ref.optional:
                return {}
            raise Retry("SourceNotFound", f"ConfigMap {namespace}/{ref.name} (spec.source.configMap) does not "
                        "exist; create it and the pipeline is synced again", delay=15.0) from None
        except errors.KubelineError as exc:
            raise Retry("SourceUnreadable", str(exc), delay=30.0) from None
    assert source.git is not None
    return await asyncio.to_thread(_clone, source.git)


def _clone(git: resources.GitSource) -> dict[str, bytes]:
    with tempfile.TemporaryDirectory(prefix="kubeline-git-") as tmp:
        cmd = ["git", "clone", "--quiet", "--depth", "1"]
        if git.revision != "HEAD":
            cmd += ["--branch", git.revision]
        try:
            subprocess.run([*cmd, git.url, tmp], check=True, capture_output=True, text=True, timeout=120)
        except FileNotFoundError:
            raise GiveUp("GitUnavailable", "spec.source.git needs the `git` program in the operator's image; "
                         "use source.configMap or inline instead") from None
        except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as exc:
            detail = getattr(exc, "stderr", "") or str(exc)
            raise Retry("GitCloneFailed", f"git clone {git.url} ({git.revision}) failed: {detail.strip()[:500]}",
                        delay=60.0) from None
        root = pathlib.Path(tmp) / git.path
        if not root.is_dir():
            raise GiveUp("GitPathNotFound", f"{git.path!r} is not a folder in {git.url} at {git.revision}")
        return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*")
                if p.is_file() and ".git" not in p.relative_to(root).parts}


async def sync_pipeline(ctx: Context, *, namespace: str, name: str, spec: Mapping[str, Any],
                        generation: int | None, old_status: Mapping[str, Any]) -> dict[str, Any]:
    """Validate the resource, write its folder, upsert it; the new status (also when it raises)."""
    where = f"Pipeline {namespace}/{name}"
    now = _now()
    try:
        parsed = convert.parse_pipeline_spec(dict(spec), where=where)
        files = await read_source(ctx, parsed.source, namespace=namespace)
        pipeline = await asyncio.to_thread(convert.build_pipeline, name=name, namespace=namespace, spec=parsed,
                                           files=files, home=ctx.kl.settings.home)
        await _check_owner(ctx, pipeline, namespace=namespace)
        # An executor this server does not run (say `local` in a kubernetes deployment: user code
        # in the server pod) makes the resource Invalid at once, not each of its runs fail later.
        ctx.kl.engine.refuse_unknown_executors(pipeline)
        await ctx.kl.store.upsert_pipeline(pipeline)
    except errors.SpecError as exc:
        await _pipeline_failed(ctx, namespace, name, old_status, phase="Invalid", reason="InvalidSpec",
                               message=str(exc), generation=generation)
        raise GiveUp("InvalidSpec", str(exc)) from None
    except (Retry, GiveUp) as exc:
        phase = "Invalid" if isinstance(exc, GiveUp) else "Pending"
        await _pipeline_failed(ctx, namespace, name, old_status, phase=phase, reason=exc.reason, message=exc.message,
                               generation=generation)
        raise
    status = convert.pipeline_status(pipeline, generation=generation, now=now)
    status["conditions"] = convert.merge_conditions(list(old_status.get("conditions") or []), status["conditions"])
    await _patch_status(ctx, k8s.PIPELINES, name, namespace, status)
    return status


async def _check_owner(ctx: Context, pipeline: runs.Pipeline, *, namespace: str) -> None:
    try:
        existing = await ctx.kl.store.get_pipeline(pipeline.name)
    except errors.NotFoundError:
        return
    owner = convert.owner_namespace(existing)
    if existing.source != "kubernetes":
        raise GiveUp("NameConflict", f"Kubeline already has a pipeline {pipeline.name!r} from its "
                     f"{existing.source} (not from Kubernetes); rename the resource or that pipeline")
    if owner != namespace:
        raise GiveUp("NameConflict", f"pipeline {pipeline.name!r} already comes from namespace {owner!r}; "
                     "pipeline names are unique across namespaces in one Kubeline")


async def _pipeline_failed(ctx: Context, namespace: str, name: str, old: Mapping[str, Any], *, phase: str,
                           reason: str, message: str, generation: int | None) -> None:
    cond = convert.condition("Ready", "False", reason, message, now=_now())
    status = {"phase": phase, "observedGeneration": generation,
              "conditions": convert.merge_conditions(list(old.get("conditions") or []), [cond])}
    await _patch_status(ctx, k8s.PIPELINES, name, namespace, status)


async def remove_pipeline(ctx: Context, *, namespace: str, name: str) -> None:
    """Forget the pipeline when it came from this resource (runs and their logs are kept)."""
    try:
        existing = await ctx.kl.store.get_pipeline(name)
    except errors.NotFoundError:
        return
    if existing.source == "kubernetes" and convert.owner_namespace(existing) == namespace:
        await ctx.kl.store.delete_pipeline(name)
        log.info("pipeline %s removed (Pipeline %s/%s deleted)", name, namespace, name)


async def refresh_pipeline(ctx: Context, *, namespace: str, name: str) -> None:
    """Keep ``nextSchedule`` current, and ``lastRun`` for runs no PipelineRun made (scheduled,
    webhook, API runs: a PipelineRun's own run is recorded when it ends); a timer calls this."""
    try:
        pipeline = await ctx.kl.store.get_pipeline(name)
    except errors.NotFoundError:
        return
    if convert.owner_namespace(pipeline) != namespace:
        return
    status: dict[str, Any] = {"nextSchedule": convert.next_schedule(pipeline.spec, now=_now())}
    finished = await ctx.kl.store.list_runs(pipeline=name, states_in=sorted(states.FINAL_RUN), limit=1)
    if finished and finished[0].triggered_by.kind is not runs.TriggerKind.KUBERNETES:
        run = finished[0]
        status["lastRun"] = {"name": "", "runId": run.id, "phase": convert.RUN_PHASES[run.state],
                             "time": convert.timestamp(run.finished_at)}
    await _patch_status(ctx, k8s.PIPELINES, name, namespace, status)


async def _patch_status(ctx: Context, plural: str, name: str, namespace: str, status: dict[str, Any]) -> None:
    try:
        await ctx.call(ctx.kube.patch_status, plural, name, convert.without_nulls(status), namespace=namespace)
    except errors.NotFoundError:
        log.info("%s %s/%s is gone; status not written", plural, namespace, name)


# PipelineRuns ---------------------------------------------------------------------------------
@dataclasses.dataclass
class RunResource:
    """The live view of one PipelineRun the daemon gets (kopf updates it in place)."""

    namespace: str
    name: str
    uid: str
    created: dt.datetime
    body: Mapping[str, Any]

    @property
    def spec(self) -> Mapping[str, Any]:
        return self.body.get("spec") or {}

    @property
    def status(self) -> Mapping[str, Any]:
        return self.body.get("status") or {}

    @property
    def generation(self) -> int | None:
        generation = self.body.get("metadata", {}).get("generation")
        return int(generation) if generation is not None else None


async def follow_run(ctx: Context, res: RunResource, *, sleep: Sleep) -> None:
    """Submit (once) and mirror the run's progress into the status until it is final."""
    if res.status.get("phase") in convert.FINAL_PHASES:
        return
    where = f"PipelineRun {res.namespace}/{res.name}"
    run_id = res.status.get("runId")
    while run_id is None:
        try:
            run_id = await submit_run(ctx, res, where=where)
        except Retry as exc:
            await _run_problem(ctx, res, "Pending", exc.reason, exc.message)
            if await sleep(exc.delay):
                return
        except GiveUp as exc:
            await _run_problem(ctx, res, "Failed", exc.reason, exc.message)
            raise
    last: dict[str, Any] | None = None
    cancel_sent = False
    while True:
        try:
            spec = convert.parse_run_spec(dict(res.spec), where=where)
        except errors.SpecError:
            spec = None
        run = await ctx.kl.store.get_run(run_id)
        deadline_passed = bool(spec and spec.timeout and (_now() - run.created_at).total_seconds() > spec.timeout)
        if not states.is_final(run.state) and not cancel_sent and spec and (spec.cancel or deadline_passed):
            reason = "spec.cancel is true" if spec.cancel else f"spec.timeout ({spec.timeout:g}s) passed"
            log.info("%s: cancelling run %s (%s)", where, run_id, reason)
            await ctx.kl.engine.cancel(run_id)
            cancel_sent = True
            continue
        timed_out = bool(spec and spec.timeout and run.state is states.RunState.CANCELLED and not spec.cancel
                         and run.finished_at is not None
                         and (run.finished_at - run.created_at).total_seconds() >= spec.timeout)
        stages = await ctx.kl.store.list_stage_runs(run_id)
        status = convert.run_status(run, stages, generation=res.generation, now=_now(), timed_out=timed_out)
        status["conditions"] = convert.merge_conditions(list(res.status.get("conditions") or []),
                                                        status["conditions"])
        if status != last:
            await _patch_status(ctx, k8s.PIPELINERUNS, res.name, res.namespace, status)
            last = status
        if status["phase"] in convert.FINAL_PHASES:
            await _record_last_run(ctx, res, status)
            return
        if await sleep(ctx.poll_seconds):
            return


async def submit_run(ctx: Context, res: RunResource, *, where: str) -> str:
    try:
        spec = convert.parse_run_spec(dict(res.spec), where=where)
    except errors.SpecError as exc:
        raise GiveUp("InvalidSpec", str(exc)) from None
    pipeline = await _pipeline_for(ctx, res, spec)
    detail = convert.trigger_detail(namespace=res.namespace, name=res.name, uid=res.uid)
    for run in await ctx.kl.store.list_runs(pipeline=pipeline.name, limit=200):
        if run.triggered_by.kind is runs.TriggerKind.KUBERNETES and run.triggered_by.detail == detail:
            return run.id  # made before a restart; the status write was lost
    sources = [await _inputs_source(ctx, ref, namespace=res.namespace) for ref in spec.inputs_from]
    inputs = convert.run_inputs(spec, [s for s in sources if s is not None])
    try:
        run = await ctx.kl.engine.submit(convert.run_pipeline(pipeline, spec), inputs=inputs,
                                         triggered_by=runs.TriggeredBy(kind=runs.TriggerKind.KUBERNETES,
                                                                       detail=detail))
    except errors.InvalidInputError as exc:
        raise GiveUp("InvalidInputs", f"{where}: {exc}") from None
    except errors.SpecError as exc:  # e.g. an executor this server does not run (stored before it was refused)
        raise GiveUp("InvalidSpec", f"{where}: {exc}") from None
    log.info("%s: run %s of %s queued", where, run.id, pipeline.name)
    status = {"phase": "Pending", "runId": run.id, "pipeline": pipeline.name,
              "conditions": convert.merge_conditions(list(res.status.get("conditions") or []), [
                  convert.condition("Submitted", "True", "RunCreated", f"Kubeline run {run.id}", now=_now())])}
    await _patch_status(ctx, k8s.PIPELINERUNS, res.name, res.namespace, status)
    return run.id


async def _pipeline_for(ctx: Context, res: RunResource, spec: resources.PipelineRunResourceSpec) -> runs.Pipeline:
    ref = spec.pipeline_ref
    try:
        pipeline = await ctx.kl.store.get_pipeline(ref)
    except errors.NotFoundError:
        pipeline = None
    if pipeline is not None and convert.owner_namespace(pipeline) in (None, res.namespace):
        return pipeline
    try:
        body = await ctx.call(ctx.kube.get_pipeline, ref, namespace=res.namespace)
    except errors.NotFoundError:
        body = None
    waited = (_now() - res.created).total_seconds()
    if body is not None and (body.get("status") or {}).get("phase") == "Invalid":
        conds = {c.get("type"): c for c in body["status"].get("conditions") or []}
        raise GiveUp("PipelineInvalid", f"Pipeline {res.namespace}/{ref} is invalid: "
                     f"{conds.get('Ready', {}).get('message', 'see its status')}")
    if waited > PIPELINE_WAIT_SECONDS:
        what = "is not synced yet (is the operator allowed to read it?)" if body else "does not exist"
        raise GiveUp("PipelineNotFound", f"Pipeline {res.namespace}/{ref} (spec.pipelineRef) {what}; "
                     f"waited {PIPELINE_WAIT_SECONDS:.0f}s")
    raise Retry("PipelineNotFound", f"Pipeline {res.namespace}/{ref} (spec.pipelineRef) "
                f"{'is not synced yet' if body else 'does not exist'}; waiting for it", delay=3.0)


async def _inputs_source(ctx: Context, ref: resources.InputsSource, *, namespace: str) -> dict[str, bytes] | None:
    local = ref.config_map_ref or ref.secret_ref
    assert local is not None
    kind, read = (("ConfigMap", ctx.kube.read_config_map) if ref.config_map_ref
                  else ("Secret", ctx.kube.read_secret))
    try:
        return dict(await ctx.call(read, local.name, namespace=namespace))
    except errors.NotFoundError:
        if local.optional:
            return None
        raise Retry("InputsNotFound", f"{kind} {namespace}/{local.name} (spec.inputsFrom) does not exist",
                    delay=5.0) from None
    except errors.KubelineError as exc:
        raise GiveUp("InputsUnreadable", f"{kind} {namespace}/{local.name} (spec.inputsFrom): {exc}") from None


async def _run_problem(ctx: Context, res: RunResource, phase: str, reason: str, message: str) -> None:
    final = phase in convert.FINAL_PHASES
    now = _now()
    status: dict[str, Any] = {
        "phase": phase, "error": message[:convert.MAX_MESSAGE_CHARS] if final else "",
        "conditions": convert.merge_conditions(list(res.status.get("conditions") or []), [
            convert.condition("Submitted", "False", reason, message, now=now),
            convert.condition("Succeeded", "False" if final else "Unknown", reason, message, now=now)])}
    if final:
        status["completionTime"] = convert.timestamp(now)
    await _patch_status(ctx, k8s.PIPELINERUNS, res.name, res.namespace, status)


async def _record_last_run(ctx: Context, res: RunResource, status: Mapping[str, Any]) -> None:
    ref = res.spec.get("pipelineRef")
    if not ref:
        return
    last = {"name": res.name, "runId": status.get("runId") or "", "phase": status["phase"],
            "time": status.get("completionTime")}
    try:
        await _patch_status(ctx, k8s.PIPELINES, str(ref), res.namespace, {"lastRun": last})
    except errors.KubelineError as exc:
        log.warning("could not record the last run on Pipeline %s/%s: %s", res.namespace, ref, exc)


async def cancel_deleted_run(ctx: Context, *, run_id: str | None, where: str) -> None:
    """The PipelineRun was deleted: cancel its run if it still goes on."""
    if not run_id:
        return
    try:
        run = await ctx.kl.store.get_run(run_id)
    except errors.NotFoundError:
        return
    if not states.is_final(run.state):
        log.info("%s deleted: cancelling run %s", where, run_id)
        await ctx.kl.engine.cancel(run_id)
