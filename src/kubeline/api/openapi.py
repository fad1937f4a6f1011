"""The OpenAPI document, made to tell the truth about what the server answers.

FastAPI's generated document is close but not exact, and the UI's typed client and schemathesis
both read it, so the differences matter:

- every error is RFC 9457 ``application/problem+json`` (``problems.install``); FastAPI documents
  its automatic 422 as ``application/json`` with its own ``HTTPValidationError`` shape, and a
  ``responses={404: {"model": ...}}`` entry lands under ``application/json`` too;
- an operation with a JSON body answers 400 when the body is not JSON at all (and 413 when it is
  over ``KUBELINE_MAX_REQUEST_BYTES``), which no route declares;
- a header or query parameter cannot be ``null`` on the wire, so ``str | None`` parameters are
  documented as the non-null schema (otherwise a client may send the text ``null``);
- a server-sent event stream documents each event (``event``, ``data``, ``id``), the OpenAPI 3.1
  way schemathesis and clients read it (see ``sse_events``);
- every operation that needs a login may answer 401 (no or a revoked credential) and 403 (a role
  or token scope that does not reach it): the rules live in ``access``, not in each route.

``install`` replaces ``app.openapi`` with a cached builder that applies these fixes.
"""

from __future__ import annotations

import copy
from typing import Any

import fastapi
from fastapi import openapi as fastapi_openapi

from kubeline.api import access

PROBLEM = "application/problem+json"
_PROBLEM_REF = {"$ref": "#/components/schemas/ProblemOut"}
_BODY_METHODS = ("post", "put", "patch")
_DESCRIPTIONS = {400: "The body is not valid JSON", 401: "Not authenticated", 403: "Not allowed for this role",
                 404: "Not found", 409: "Conflict", 413: "Request body too large",
                 415: "Unsupported media type", 422: "Invalid request (field errors in `errors`)",
                 429: "Too many requests", 503: "Service unavailable"}


def sse_events(*kinds: tuple[str, dict[str, Any]]) -> dict[int | str, dict[str, Any]]:
    """A 200 ``text/event-stream`` response whose events are ``(event name, data schema)``.

    Each event is documented as the object an SSE parser yields: ``event``, ``data`` (JSON text,
    its shape in ``contentSchema``), optional ``id`` and ``retry``."""
    one_of = [{
        "type": "object", "required": ["event", "data"],
        "properties": {"event": {"const": name}, "data": {"type": "string", "contentMediaType": "application/json",
                                                          "contentSchema": schema},
                       "id": {"type": "string"}, "retry": {"type": "integer"}}} for name, schema in kinds]
    return {200: {"description": "A text/event-stream: " + ", ".join(f"`{name}` events" for name, _ in kinds),
                  "content": {"text/event-stream": {"schema": {"oneOf": one_of}}}}}


def _problem_response(status: int, given: dict[str, Any] | None) -> dict[str, Any]:
    description = (given or {}).get("description") or _DESCRIPTIONS.get(status, "Error")
    if status == 422 and description == "Validation Error":
        description = _DESCRIPTIONS[422]
    return {"description": description, "content": {PROBLEM: {"schema": dict(_PROBLEM_REF)}}}


def _non_null(schema: dict[str, Any]) -> dict[str, Any]:
    options = schema.get("anyOf")
    if not isinstance(options, list):
        return schema
    kept = [option for option in options if option.get("type") != "null"]
    if len(kept) != 1 or len(kept) == len(options):
        return schema
    merged = {key: value for key, value in schema.items() if key != "anyOf"}
    return {**kept[0], **merged}


def _fix_operation(operation: dict[str, Any], *, method: str) -> None:
    responses: dict[str, Any] = operation.setdefault("responses", {})
    for status in list(responses):
        if status.isdigit() and int(status) >= 400:
            responses[status] = _problem_response(int(status), responses[status])
    if method in _BODY_METHODS and "requestBody" in operation:
        for code in (400, 413):
            responses.setdefault(str(code), _problem_response(code, None))
    for parameter in operation.get("parameters", []):
        if parameter.get("in") in ("header", "query", "path") and isinstance(parameter.get("schema"), dict):
            parameter["schema"] = _non_null(parameter["schema"])


def build(app: fastapi.FastAPI) -> dict[str, Any]:
    document = copy.deepcopy(fastapi_openapi.utils.get_openapi(
        title=app.title, version=app.version, description=app.description, routes=app.routes,
        openapi_version=app.openapi_version, tags=app.openapi_tags, servers=app.servers))
    for path_item in document.get("paths", {}).values():
        for method, operation in path_item.items():
            if isinstance(operation, dict) and "responses" in operation:
                _fix_operation(operation, method=method)
    for entry in access.route_table(app):
        operation = document.get("paths", {}).get(entry.path, {}).get(entry.method.lower())
        if isinstance(operation, dict) and not (entry.rule is not None and entry.rule.public):
            for code in (401, 403):
                operation["responses"].setdefault(str(code), _problem_response(code, None))
    schemas: dict[str, Any] = document.get("components", {}).get("schemas", {})
    text = repr(document["paths"])
    for unused in ("HTTPValidationError", "ValidationError"):
        if unused in schemas and f"/{unused}'" not in text:
            del schemas[unused]
    return document


def install(app: fastapi.FastAPI) -> None:
    cached: dict[str, Any] = {}

    def openapi() -> dict[str, Any]:
        if not cached:
            cached.update(build(app))
        return cached

    app.openapi = openapi  # type: ignore[method-assign]
