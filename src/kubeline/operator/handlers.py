"""The kopf handlers: thin, each one call into ``reconcile`` plus kopf's error/event plumbing.

Registered on their own ``REGISTRY`` (not kopf's global one) so importing this module has no
side effects. kopf keeps its bookkeeping in ``kubeline.dev/*`` annotations, never in the status
(the CRD schema would prune it), and its finalizer is ``kubeline.dev/finalizer`` (Pipelines only:
a PipelineRun deleted while no operator runs must not hang).
"""

from __future__ import annotations

import datetime as dt
import logging
from typing import Any

import kopf

from kubeline.operator import reconcile, resources

REGISTRY = kopf.OperatorRegistry()
PIPELINES = (resources.GROUP, resources.VERSION, "pipelines")
PIPELINERUNS = (resources.GROUP, resources.VERSION, "pipelineruns")


def _ctx(memo: Any) -> reconcile.Context:
    ctx: reconcile.Context = memo.ctx
    return ctx


@kopf.on.startup(registry=REGISTRY)
def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
    settings.persistence.finalizer = f"{resources.GROUP}/finalizer"
    # No cluster-wide discovery of CRDs/namespaces: a namespaced Role is enough (deploy/base/rbac.yaml).
    settings.scanning.disabled = True
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=resources.GROUP)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=resources.GROUP, key="last-handled-configuration")
    settings.posting.level = logging.WARNING
    settings.watching.server_timeout = 120
    settings.watching.client_timeout = 150
    settings.networking.request_timeout = 30
    settings.batching.error_delays = [1, 2, 5, 10, 15, 30]  # API server away: keep trying, never give up


@kopf.on.login(registry=REGISTRY)
def login(**kwargs: Any) -> Any:
    """In a pod: the ServiceAccount; elsewhere: $KUBECONFIG / ~/.kube/config."""
    return kopf.login_with_service_account(**kwargs) or kopf.login_with_kubeconfig(**kwargs)


def _outcome(exc: reconcile.Retry | reconcile.GiveUp, body: Any) -> Exception:
    kopf.warn(body, reason=exc.reason, message=exc.message[:1000])
    if isinstance(exc, reconcile.Retry):
        return kopf.TemporaryError(exc.message, delay=exc.delay)
    return kopf.PermanentError(exc.message)


@kopf.on.resume(*PIPELINES, registry=REGISTRY)
@kopf.on.create(*PIPELINES, registry=REGISTRY)
@kopf.on.update(*PIPELINES, backoff=5, registry=REGISTRY)
async def sync_pipeline(*, name: Any, namespace: Any, spec: Any, status: Any, body: Any, memo: Any,
                        **_: Any) -> None:
    try:
        await reconcile.sync_pipeline(_ctx(memo), namespace=namespace, name=name, spec=dict(spec),
                                      generation=body.get("metadata", {}).get("generation"),
                                      old_status=dict(status))
    except (reconcile.Retry, reconcile.GiveUp) as exc:
        raise _outcome(exc, body) from None


@kopf.on.delete(*PIPELINES, registry=REGISTRY)
async def remove_pipeline(*, name: Any, namespace: Any, memo: Any, **_: Any) -> None:
    await reconcile.remove_pipeline(_ctx(memo), namespace=namespace, name=name)


@kopf.timer(*PIPELINES, interval=60, initial_delay=30, registry=REGISTRY)
async def refresh_pipeline(*, name: Any, namespace: Any, memo: Any, **_: Any) -> None:
    await reconcile.refresh_pipeline(_ctx(memo), namespace=namespace, name=name)


@kopf.daemon(*PIPELINERUNS, cancellation_timeout=5, backoff=5, registry=REGISTRY)
async def follow_run(*, name: Any, namespace: Any, uid: Any, body: Any, meta: Any, memo: Any,
                     stopped: Any, **_: Any) -> None:
    created = dt.datetime.fromisoformat(str(meta.get("creationTimestamp")).replace("Z", "+00:00"))
    res = reconcile.RunResource(namespace=namespace, name=name, uid=uid, created=created, body=body)

    async def sleep(seconds: float) -> bool:
        await stopped.wait(seconds)
        return bool(stopped)

    try:
        await reconcile.follow_run(_ctx(memo), res, sleep=sleep)
    except reconcile.GiveUp as exc:
        kopf.warn(body, reason=exc.reason, message=exc.message[:1000])
        return
    if stopped and stopped.reason is not None and kopf.DaemonStoppingReason.RESOURCE_DELETED in stopped.reason:
        await reconcile.cancel_deleted_run(_ctx(memo), run_id=(body.get("status") or {}).get("runId"),
                                           where=f"PipelineRun {namespace}/{name}")


@kopf.on.delete(*PIPELINERUNS, optional=True, registry=REGISTRY)
async def cancel_run(*, name: Any, namespace: Any, status: Any, memo: Any, **_: Any) -> None:
    await reconcile.cancel_deleted_run(_ctx(memo), run_id=status.get("runId"),
                                       where=f"PipelineRun {namespace}/{name}")
