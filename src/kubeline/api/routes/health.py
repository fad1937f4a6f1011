"""``/healthz`` (the process answers), ``/readyz`` (database reachable, schema at head), ``/metrics``."""

from __future__ import annotations

import asyncio

import fastapi

from kubeline import metrics
from kubeline.api import access, deps, schemas
from kubeline.auth import tokens

router = fastapi.APIRouter(tags=["health"])
_READY_TIMEOUT = 5.0


@router.get("/healthz", response_model=schemas.HealthOut, dependencies=[access.public("liveness probe")])
async def healthz() -> schemas.HealthOut:
    return schemas.HealthOut(status="ok")


@router.get("/readyz", response_model=schemas.HealthOut, responses={503: {"model": schemas.HealthOut}},
            dependencies=[access.public("readiness probe")])
async def readyz(kl: deps.KL) -> fastapi.Response:
    """200 when the database answers and its migrations are current; 503 with the failing check."""
    checks: dict[str, str] = {}
    is_current = getattr(kl.store, "is_current", None)
    try:
        if is_current is not None:
            current = await asyncio.wait_for(is_current(), _READY_TIMEOUT)
            checks["migrations"] = "current" if current else "behind: run `kubeline db upgrade`"
        else:
            await asyncio.wait_for(kl.store.list_pipelines(), _READY_TIMEOUT)
        checks["database"] = "ok"
    except Exception as exc:
        checks["database"] = f"unreachable: {type(exc).__name__}: {exc}"[:300]
    ready = checks.get("database") == "ok" and checks.get("migrations", "current") == "current"
    body = schemas.HealthOut(status="ready" if ready else "not ready", checks=checks)
    return fastapi.Response(body.model_dump_json(), status_code=200 if ready else 503,
                            media_type="application/json")


@router.get("/metrics", response_class=fastapi.responses.PlainTextResponse,
            responses={200: {"content": {metrics.CONTENT_TYPE: {}}}},
            dependencies=[access.public("Prometheus; KUBELINE_METRICS_TOKEN makes it ask for that token")])
async def prometheus_metrics(kl: deps.KL, request: fastapi.Request) -> fastapi.Response:
    expected = kl.settings.metrics_token
    if expected is not None and not tokens.same(request.headers.get("authorization", ""),
                                                f"Bearer {expected.get_secret_value()}"):
        raise fastapi.HTTPException(401, detail="send Authorization: Bearer <KUBELINE_METRICS_TOKEN> for /metrics",
                                    headers={"WWW-Authenticate": "Bearer"})
    registry: metrics.Metrics = request.app.state.metrics
    await registry.refresh(store=kl.store, engine=kl.engine)
    return fastapi.Response(registry.render(), media_type=metrics.CONTENT_TYPE)
