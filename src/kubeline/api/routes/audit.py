"""``/api/v1/audit`` (admins): who did what, when, from where; newest first, filtered."""

from __future__ import annotations

import datetime as dt
from typing import Annotated

import fastapi
import pydantic

from kubeline.api import access, auth_schemas, deps
from kubeline.auth import roles

router = fastapi.APIRouter(tags=["audit"])


def _iso_only(value: object) -> object:
    """A time as ISO 8601 (what the document says), not a bare number pydantic would read as epoch seconds."""
    if isinstance(value, str) and value.strip().lstrip("+-").replace(".", "", 1).isdigit():
        raise ValueError("give a time as ISO 8601, e.g. 2026-01-31T12:00:00Z")
    return value


When = Annotated[dt.datetime | None, pydantic.BeforeValidator(_iso_only),
                 fastapi.Query(description="ISO 8601, e.g. 2026-01-31T12:00:00Z")]


@router.get("/audit", response_model=auth_schemas.AuditList, dependencies=[access.requires(roles.Role.admin)])
async def list_audit(
    *,
    kl: deps.KL,
    actor: Annotated[str | None, fastapi.Query(max_length=200, description="e.g. user:alice, token:ci")] = None,
    action: Annotated[str | None, fastapi.Query(max_length=64, description="e.g. login, cancel_run")] = None,
    target: Annotated[str | None, fastapi.Query(max_length=300, description="Prefix, e.g. 'POST /api/v1/runs'")] = None,
    since: When = None,
    until: When = None,
    before_id: Annotated[int | None, fastapi.Query(ge=1)] = None,
    limit: Annotated[int, fastapi.Query(ge=1, le=1000)] = 100,
) -> auth_schemas.AuditList:
    found = await kl.auth.accounts.list_audit(actor=actor, action=action, target=target, since=since, until=until,
                                              before_id=before_id, limit=limit)
    return auth_schemas.AuditList(items=[auth_schemas.AuditOut.of(e) for e in found],
                                  next=found[-1].id if len(found) == limit else None)
