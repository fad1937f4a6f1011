"""Who may call which route: deny by default, every route declares its rule.

Every router is mounted with ``GUARD``: a route that declares no rule answers to admins only
(and the route-table test fails, naming the route and what to add). A route declares its rule
with one dependency, in its decorator or as a parameter that receives the caller::

    @router.post("/{run_id}/cancel", dependencies=[access.requires(Role.operator, pipeline=access.run_path())])
    async def cancel_run(..., who: Annotated[roles.Principal, access.requires(Role.viewer)]) -> ...

- ``requires(role, pipeline=...)``: a logged-in caller with ``role`` (on that pipeline, when the
  route acts on one: grants and token scopes apply). Without ``pipeline`` the route is global:
  tokens limited to some pipelines are refused, unless ``filtered=True`` says the route shows
  such callers only what is in their scope (``visible``).
- ``authenticated()``: anyone logged in, even before the forced first password change.
- ``public(reason)``: no login (health probes, signed webhooks, the per-attempt-token upload,
  login itself). Keep these few.

Callers prove who they are with ``Authorization: Bearer <API token>`` (or ``X-Kubeline-Token``,
which passes the Kubernetes API server's Service proxy), or the session cookie of a
browser login; a cookie-authenticated request that changes state must also carry
``X-CSRF-Token``. With auth disabled (``--insecure-no-auth``) everyone is an admin.
"""

from __future__ import annotations

import dataclasses
import hmac
from collections.abc import Awaitable, Callable
from typing import Any

import fastapi
from fastapi import params, routing

from kubeline import bootstrap
from kubeline.auth import roles, service
from kubeline.domain import errors, runs

Role = roles.Role
SESSION_COOKIE = "kubeline_session"
CSRF_HEADER = "X-CSRF-Token"
TOKEN_HEADER = "X-Kubeline-Token"  # noqa: S105 - a header name; the Kubernetes API proxy drops Authorization
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
Locator = Callable[[fastapi.Request, bootstrap.Kubeline], Awaitable[tuple[str, list[str]] | None]]


@dataclasses.dataclass(frozen=True)
class Rule:
    role: Role | None  # None: public, or any logged-in caller
    public: str = ""  # why it is open without a login
    pipeline: Locator | None = None
    filtered: bool = False
    before_password_change: bool = False
    audit: bool = True  # state-changing calls are recorded in the audit log
    audit_reads: bool = False  # ...and GETs too (a provider login's callback)

    def describe(self) -> str:
        if self.public:
            return f"public ({self.public})"
        if self.role is None:
            return "authenticated"
        return self.role.name + (" on the pipeline" if self.pipeline else "") + (" (filtered)" if self.filtered else "")


def _kubeline(request: fastapi.Request) -> bootstrap.Kubeline:
    kl: bootstrap.Kubeline = request.app.state.kubeline
    return kl


def _denied(status: int, message: str, retry_after: float | None = None) -> fastapi.HTTPException:
    headers = {"WWW-Authenticate": 'Bearer realm="kubeline"'} if status == 401 else {}
    if retry_after is not None:
        headers["Retry-After"] = str(max(1, int(retry_after + 0.999)))
    return fastapi.HTTPException(status, detail=message, headers=headers or None)


async def principal(request: fastapi.Request) -> roles.Principal:
    """Who calls (cached on the request); 401 when nobody, or a bad token or session."""
    cached = getattr(request.state, "principal", None)
    if isinstance(cached, roles.Principal):
        return cached
    kl = _kubeline(request)
    if not kl.settings.auth_enabled:
        found = roles.INSECURE
    else:
        found = await _authenticate(request, kl)
    request.state.principal = found
    return found


async def _authenticate(request: fastapi.Request, kl: bootstrap.Kubeline) -> roles.Principal:
    scheme, _, credentials = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" and request.headers.get(TOKEN_HEADER):  # through the K8s Service proxy
        scheme, credentials = "bearer", request.headers[TOKEN_HEADER]
    try:
        if scheme.lower() == "bearer" and credentials.strip():
            return await kl.auth.principal_for_token(credentials)
        cookie = request.cookies.get(SESSION_COOKIE)
        if cookie:
            found, session = await kl.auth.principal_for_session(cookie)
            if request.method not in SAFE_METHODS and not hmac.compare_digest(
                    request.headers.get(CSRF_HEADER, "").encode(), session.csrf_token.encode()):
                raise service.Denied(403, f"missing or wrong {CSRF_HEADER} header: browser sessions send the "
                                          "csrf_token from /api/v1/auth/me with every change")
            return found
    except service.Denied as exc:
        raise _denied(exc.status, str(exc), exc.retry_after) from None
    raise _denied(401, "log in first: send `Authorization: Bearer <API token>` (KUBELINE_TOKEN, `kubeline login`) "
                       "or log in at /api/v1/auth/login")


def _check(rule: Rule) -> Callable[[fastapi.Request], Awaitable[roles.Principal]]:
    async def check(request: fastapi.Request) -> roles.Principal:
        who = await principal(request)
        if who.must_change_password and not rule.before_password_change:
            raise _denied(403, "change your password first: POST /api/v1/auth/password "
                               '{"current": ..., "new": ...}')
        if rule.role is None:
            return who
        if rule.pipeline is not None:
            located = await rule.pipeline(request, _kubeline(request))
            if located is not None:
                name, tags = located
                if not who.can(rule.role, name, tags):
                    raise _denied(403, _why(who, rule.role, f"pipeline {name!r}"))
                return who
        if who.scoped and not rule.filtered:
            raise _denied(403, f"token {who.name!r} is limited to pipelines {', '.join(who.scope or ())}; "
                               "this call is not about one of them")
        if who.role < rule.role:
            raise _denied(403, _why(who, rule.role, "this"))
        return who

    check.kubeline_rule = rule  # type: ignore[attr-defined]
    return check


def _why(who: roles.Principal, role: Role, what: str) -> str:
    return (f"{who.actor} may not do {what}: it needs the {role.name} role (ask an admin for the role or a "
            "grant on the pipeline)")


def requires(role: Role, *, pipeline: Locator | None = None, filtered: bool = False) -> Any:
    """The rule of a route: ``role`` at least (on the pipeline ``pipeline`` locates)."""
    return fastapi.Depends(_check(Rule(role=role, pipeline=pipeline, filtered=filtered)))


def authenticated(*, audit: bool = True) -> Any:
    return fastapi.Depends(_check(Rule(role=None, before_password_change=True, audit=audit)))


def public(reason: str, *, audit: bool = True, audit_reads: bool = False) -> Any:
    async def open_route() -> None:
        return None

    open_route.kubeline_rule = Rule(role=None, public=reason, audit=audit,  # type: ignore[attr-defined]
                                    audit_reads=audit_reads)
    return fastapi.Depends(open_route)


# where the pipeline is ------------------------------------------------------------------------
def pipeline_path(param: str = "name") -> Locator:
    async def locate(request: fastapi.Request, kl: bootstrap.Kubeline) -> tuple[str, list[str]] | None:
        name = request.path_params.get(param)
        return None if name is None else await _with_tags(request, kl, str(name))

    return locate


def run_path(param: str = "run_id") -> Locator:
    async def locate(request: fastapi.Request, kl: bootstrap.Kubeline) -> tuple[str, list[str]] | None:
        try:
            run = await kl.store.get_run(str(request.path_params.get(param)))
        except errors.NotFoundError:
            return None
        request.state.located_run = run
        return run.pipeline, list(run.spec.tags)

    return locate


def pipeline_body(field: str = "pipeline") -> Locator:
    async def locate(request: fastapi.Request, kl: bootstrap.Kubeline) -> tuple[str, list[str]] | None:
        try:
            body = await request.json()
        except ValueError:
            return None
        name = body.get(field) if isinstance(body, dict) else None
        return await _with_tags(request, kl, name) if isinstance(name, str) else None

    return locate


async def _with_tags(request: fastapi.Request, kl: bootstrap.Kubeline, name: str) -> tuple[str, list[str]]:
    try:
        pipeline = await kl.store.get_pipeline(name)
    except errors.NotFoundError:
        return name, []
    request.state.located_pipeline = pipeline
    return name, list(pipeline.spec.tags)


def located_run(request: fastapi.Request, run_id: str) -> runs.Run | None:
    """The run ``run_id`` as the access check read it for this request, or None."""
    found = getattr(request.state, "located_run", None)
    return found if isinstance(found, runs.Run) and found.id == run_id else None


def located_pipeline(request: fastapi.Request, name: str) -> runs.Pipeline | None:
    """The stored pipeline ``name`` as the access check loaded it for this request (a route
    reuses it instead of reading it again: one query less per call), or None."""
    found = getattr(request.state, "located_pipeline", None)
    return found if isinstance(found, runs.Pipeline) and found.name == name else None


def visible(who: roles.Principal, pipeline: str, tags: list[str] | tuple[str, ...] = ()) -> bool:
    """For ``filtered`` routes: whether ``who`` may see this pipeline's things."""
    return who.in_scope(pipeline, tags)


# deny by default -------------------------------------------------------------------------------
def rule_of(route: Any) -> Rule | None:
    """The rule a route declares (searched through its dependencies), or None."""
    dependant = getattr(route, "dependant", None)
    stack = [dependant] if dependant is not None else []
    while stack:
        current = stack.pop()
        found = getattr(current.call, "kubeline_rule", None)
        if isinstance(found, Rule):
            return found
        stack.extend(current.dependencies)
    return None


async def _guard(request: fastapi.Request) -> None:
    route = request.scope.get("route")
    if isinstance(route, routing.APIRoute) and rule_of(route) is None:
        await _check(Rule(role=Role.admin))(request)


GUARD: params.Depends = fastapi.Depends(_guard)


@dataclasses.dataclass(frozen=True)
class Entry:
    method: str
    path: str
    rule: Rule | None
    where: str  # module.function of the endpoint
    api: bool  # a FastAPI route (with dependencies), not a plain Starlette one such as the docs page


def route_table(app: fastapi.FastAPI) -> list[Entry]:
    """Every (method, full path) the app serves with the rule it declares (for the route-table test)."""
    contexts: Any = app.routes
    walk = getattr(routing, "iter_route_contexts", None)  # FastAPI >= 0.16x keeps included routers nested
    if walk is not None:
        contexts = list(walk(app.routes))
    found = []
    for route in contexts:
        endpoint = getattr(route, "endpoint", None)
        where = f"{endpoint.__module__}.{endpoint.__name__}" if endpoint is not None else "?"
        for method in sorted(getattr(route, "methods", None) or ()):
            if method not in ("HEAD", "OPTIONS"):
                found.append(Entry(method=method, path=str(route.path), rule=rule_of(route), where=where,
                                   api=getattr(route, "dependant", None) is not None))
    return found
