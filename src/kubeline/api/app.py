"""The app factory: one FastAPI app over an open ``Kubeline`` (the caller owns its lifetime).

``/api/v1`` carries the resources, ``/healthz``, ``/readyz`` and ``/metrics`` sit at the root
(where probes and Prometheus look). The OpenAPI document is at ``/api/v1/openapi.json``.

The attempt upload (``PUT /api/v1/attempts/{id}/io``, authorised by a per-attempt token) is a
second app, ``create_upload_app``, that ``kubeline server`` serves on its own port
(``KUBELINE_UPLOAD_PORT``): the only port stage pods need, so a NetworkPolicy can let them reach
it and never the API.

Every router is mounted with ``access.GUARD`` (deny by default: see ``kubeline.api.access``);
``security.Security`` adds security headers to every answer and audits every change.
"""

from __future__ import annotations

import fastapi

import kubeline
from kubeline import bootstrap
from kubeline import metrics as metrics_
from kubeline.api import access, openapi, problems, schemas, security, sse
from kubeline.api.routes import (
    attempt_io,
    audit,
    auth,
    cells,
    git,
    health,
    hooks,
    notifications,
    oidc,
    pipelines,
    retention,
    run_feed,
    runs,
    schedules,
    scripts,
    secrets,
    stats,
    streams,
    system,
    tokens,
    users,
)

API_PREFIX = "/api/v1"


def create_app(kl: bootstrap.Kubeline, *, metrics: metrics_.Metrics | None = None) -> fastapi.FastAPI:
    app = fastapi.FastAPI(
        title="Kubeline",
        version=getattr(kubeline, "__version__", "0"),
        description="Pipelines, runs, logs and schedules of a Kubeline server. Errors are RFC 9457 "
                    "problem details (application/problem+json).",
        openapi_url=f"{API_PREFIX}/openapi.json", docs_url=f"{API_PREFIX}/docs", redoc_url=None,
    )
    app.state.kubeline = kl
    app.state.metrics = metrics or metrics_.METRICS
    app.state.run_watch = sse.RunWatch(store=kl.store)
    metrics_.attach(kl.engine, app.state.metrics)
    problems.install(app)
    openapi.install(app)
    app.add_middleware(problems.BodyLimit, limit=kl.settings.max_request_bytes)
    app.add_middleware(security.Security)
    app.include_router(health.router, dependencies=[access.GUARD])
    for module in (pipelines, run_feed, runs, cells, git, notifications, retention, streams, secrets, scripts, hooks,
                   schedules, stats, system, auth, oidc, tokens, users, audit):
        app.include_router(module.router, prefix=API_PREFIX, dependencies=[access.GUARD])
    return app


def create_upload_app(kl: bootstrap.Kubeline) -> fastapi.FastAPI:
    """The attempt-upload listener's app: ``/api/v1/attempts/{id}/io`` and ``/healthz``, nothing else."""
    app = fastapi.FastAPI(title="Kubeline attempt upload", version=getattr(kubeline, "__version__", "0"),
                          openapi_url=None, docs_url=None, redoc_url=None)
    app.state.kubeline = kl
    problems.install(app)
    app.add_middleware(problems.BodyLimit, limit=kl.settings.max_request_bytes)
    app.add_api_route("/healthz", health.healthz, response_model=schemas.HealthOut)
    app.include_router(attempt_io.router, prefix=API_PREFIX)
    return app
