"""ASGI middleware on every response: security headers, and the audit record of every call
that changes state.

The audit record is written here, after the route answered, so no route can forget it: the
actor is the principal ``access`` put on the request, the action the route's name, the outcome
its status. Routes add details (never secret values) through ``note``. A route may instead write
the row together with its own change (``audit_entry`` then ``audited``: ``POST /api/v1/runs``
writes the run and its audit row in one statement), so neither exists without the other.
"""

from __future__ import annotations

import logging
from typing import Any

import fastapi
from starlette import types

from kubeline.api import access
from kubeline.auth import roles

log = logging.getLogger("kubeline.audit")
HEADERS = [
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
    (b"content-security-policy", b"frame-ancestors 'none'; base-uri 'none'; object-src 'none'"),
    (b"cross-origin-opener-policy", b"same-origin"),
    (b"permissions-policy", b"camera=(), microphone=(), geolocation=()"),
]
_HSTS = (b"strict-transport-security", b"max-age=31536000; includeSubDomains")
_AUDITED = "audit_written"


def note(request: fastapi.Request, **detail: Any) -> None:
    """Add to the audit record of this request (names, ids: never a secret's value)."""
    request.state.audit_detail = {**getattr(request.state, "audit_detail", {}), **detail}


def client_ip(scope: types.Scope) -> str:
    client = scope.get("client")
    return str(client[0]) if client else ""


class Security:
    def __init__(self, app: types.ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: types.Scope, receive: types.Receive, send: types.Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 0
        https = scope.get("scheme") == "https"

        async def send_with_headers(message: types.Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
                present = {k.lower() for k, _ in message.get("headers", [])}
                extra = [h for h in [*HEADERS, *([_HSTS] if https else [])] if h[0] not in present]
                message = {**message, "headers": [*message.get("headers", []), *extra]}
            await send(message)

        try:
            await self.app(scope, receive, send_with_headers)
        finally:
            await self._audit(scope, status or 500)

    async def _audit(self, scope: types.Scope, status: int) -> None:
        entry = audit_entry(scope, status)
        if entry is None:
            return
        app = scope.get("app")
        try:
            kl = app.state.kubeline  # type: ignore[union-attr]
            await kl.auth.audit(**entry)
        except Exception:  # the answer is sent; a failed audit write must be seen, not crash
            log.exception("could not write the audit record of %s %s", scope.get("method"), scope.get("path"))


def audit_entry(scope: types.Scope, status: int) -> dict[str, Any] | None:
    """What the audit row of this request says (``AuthService.audit``'s arguments), or None when
    the request is not audited (a read, a route that opts out, or a route that wrote it already)."""
    route = scope.get("route")
    rule = access.rule_of(route) if route is not None else None
    if route is None or (rule is not None and not rule.audit):
        return None
    if scope.get("method", "GET") in access.SAFE_METHODS and not (rule is not None and rule.audit_reads):
        return None
    state = scope.get("state") or {}
    if state.get(_AUDITED):
        return None
    who = state.get("principal")
    return {"actor": who.actor if isinstance(who, roles.Principal) else "anonymous",
            "action": getattr(route, "name", "") or "request", "target": f"{scope.get('method')} {scope.get('path')}",
            "outcome": status, "ip": client_ip(scope), "detail": dict(state.get("audit_detail") or {})}


def audited(request: fastapi.Request, written: bool = True) -> None:
    """The route writes this request's audit row itself, with its change (``audit_entry`` then
    ``Store.create_run(audit=...)``): the middleware writes none. ``written=False``: the change
    was refused after all, the middleware records the refusal."""
    setattr(request.state, _AUDITED, written)
