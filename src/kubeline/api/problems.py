"""Every error as RFC 9457 ``application/problem+json``, and the request body size limit.

Domain errors map to statuses here, once: routes raise ``kubeline.domain.errors`` and never
build error responses themselves. Validation errors keep pydantic's field locations, so a client
sees which field to fix. Anything unexpected is a 500 with a generic detail (the traceback goes
to the server log, not to the client).
"""

from __future__ import annotations

import json
import logging
import re
from typing import Any

import fastapi
import pydantic
from fastapi import exceptions as fastapi_exceptions
from starlette import exceptions as starlette_exceptions
from starlette import types

from kubeline.api import schemas
from kubeline.domain import errors

log = logging.getLogger(__name__)
_METHODS = {"GET", "PUT", "POST", "DELETE", "PATCH", "OPTIONS", "HEAD"}
MEDIA_TYPE = "application/problem+json"
TYPE_BASE = "https://kubeline.dev/problems/"

_STATUS: list[tuple[type[errors.KubelineError], int, str]] = [
    (errors.SpecError, 422, "invalid-pipeline"),
    (errors.NotFoundError, 404, "not-found"),
    (errors.GoneError, 410, "gone"),
    (errors.InvalidInputError, 422, "invalid-input"),
    (errors.ConflictError, 409, "conflict"),
    (errors.TransitionError, 409, "conflict"),
    (errors.SecretError, 422, "secret"),
    (errors.ExecutorError, 503, "executor-unavailable"),
]
TITLES = {400: "Bad request", 401: "Unauthorized", 403: "Forbidden", 404: "Not found", 405: "Method not allowed",
          409: "Conflict", 410: "Gone", 413: "Request body too large", 415: "Unsupported media type",
          422: "Unprocessable content",
          429: "Too many requests", 500: "Internal server error", 503: "Service unavailable"}


def response(*, status: int, detail: str, instance: str = "", kind: str = "", **extra: Any) -> fastapi.Response:
    body = schemas.ProblemOut(type=TYPE_BASE + kind if kind else "about:blank",
                              title=TITLES.get(status, "Error"), status=status, detail=detail,
                              instance=instance, **extra)
    return fastapi.Response(body.model_dump_json(), status_code=status, media_type=MEDIA_TYPE)


def status_of(exc: errors.KubelineError) -> tuple[int, str]:
    for kind, status, name in _STATUS:
        if isinstance(exc, kind):
            return status, name
    return 400, "error"


async def _kubeline_error(request: fastapi.Request, exc: Exception) -> fastapi.Response:
    assert isinstance(exc, errors.KubelineError)
    status, kind = status_of(exc)
    extra: dict[str, Any] = {}
    if isinstance(exc, errors.SpecError):
        extra["problems"] = [schemas.SpecProblem.of(p) for p in exc.problems]
    return response(status=status, detail=str(exc), instance=request.url.path, kind=kind, **extra)


def _location(loc: tuple[Any, ...] | list[Any]) -> str:
    return ".".join(str(part) for part in loc)


async def _validation_error(request: fastapi.Request, exc: Exception) -> fastapi.Response:
    assert isinstance(exc, fastapi_exceptions.RequestValidationError | pydantic.ValidationError)
    field_errors = [schemas.FieldError(location=_location(e.get("loc", ())), message=str(e.get("msg", "")))
                    for e in exc.errors()]
    detail = "; ".join(f"{e.location}: {e.message}" for e in field_errors[:5]) or "invalid request"
    return response(status=422, detail=detail, instance=request.url.path, kind="validation",
                    errors=field_errors)


async def _http_error(request: fastapi.Request, exc: Exception) -> fastapi.Response:
    assert isinstance(exc, starlette_exceptions.HTTPException)
    detail = exc.detail if isinstance(exc.detail, str) else json.dumps(exc.detail)
    result = response(status=exc.status_code, detail=detail, instance=request.url.path)
    for key, value in (exc.headers or {}).items():
        result.headers[key] = value
    if exc.status_code == 405 and (methods := allowed_methods(request)):
        result.headers["Allow"] = ", ".join(methods)
    return result


def allowed_methods(request: fastapi.Request) -> list[str]:
    """Every method the OpenAPI document lists for this path (starlette's 405 names only the first
    route's), so ``Allow`` and the document agree."""
    found: set[str] = set()
    paths: dict[str, Any] = request.app.openapi().get("paths", {})
    if request.url.path in paths:  # a literal path wins over templates, as in the router
        matching = [paths[request.url.path]]
    else:
        matching = [item for template, item in paths.items()
                    if re.fullmatch(re.sub(r"\\\{[^/]+?\\\}", "[^/]+", re.escape(template)), request.url.path)]
    for item in matching:
        found.update(method.upper() for method in item if method.upper() in _METHODS)
    if "GET" in found:
        found.add("HEAD")
    return sorted(found)


async def _unexpected(request: fastapi.Request, exc: Exception) -> fastapi.Response:
    log.error("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return response(status=500, detail="internal error; the server log has the details",
                    instance=request.url.path)


def install(app: fastapi.FastAPI) -> None:
    app.add_exception_handler(errors.KubelineError, _kubeline_error)
    app.add_exception_handler(fastapi_exceptions.RequestValidationError, _validation_error)
    app.add_exception_handler(pydantic.ValidationError, _validation_error)
    app.add_exception_handler(starlette_exceptions.HTTPException, _http_error)
    app.add_exception_handler(Exception, _unexpected)


class BodyLimit:
    """ASGI middleware: refuse bodies over ``limit`` bytes with 413, by Content-Length or while
    streaming (chunked uploads are counted), before a route parses anything."""

    def __init__(self, app: types.ASGIApp, *, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: types.Scope, receive: types.Receive, send: types.Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.limit):
            await self._too_large(scope, receive, send)
            return
        seen = 0

        async def counting_receive() -> types.Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    raise fastapi.HTTPException(413, detail=self._detail())
            return message

        await self.app(scope, counting_receive, send)

    def _detail(self) -> str:
        return (f"request body is larger than {self.limit} bytes; send less "
                "(the limit is the server setting KUBELINE_MAX_REQUEST_BYTES)")

    async def _too_large(self, scope: types.Scope, receive: types.Receive, send: types.Send) -> None:
        result = response(status=413, detail=self._detail(), instance=scope.get("path", ""), kind="too-large")
        await result(scope, receive, send)

