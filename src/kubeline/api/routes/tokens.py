"""``/api/v1/tokens``: API tokens. Anyone logged in makes personal tokens (a role up to their own,
optionally limited to some pipelines, with an expiry); admins also make service tokens (no
owner). The secret is in the creation answer only; the store keeps its SHA-256."""

from __future__ import annotations

import datetime as dt
from typing import Annotated

import fastapi

from kubeline.api import access, auth_schemas, deps, security
from kubeline.auth import roles

Role = roles.Role
router = fastapi.APIRouter(prefix="/tokens", tags=["tokens"])
Who = Annotated[roles.Principal, access.requires(Role.viewer)]


@router.get("", response_model=list[auth_schemas.TokenOut])
async def list_tokens(who: Who, kl: deps.KL) -> list[auth_schemas.TokenOut]:
    """Your tokens; an admin sees every token."""
    found = await kl.auth.accounts.list_tokens(user_id=None if who.role is Role.admin else who.user_id or "-")
    return [auth_schemas.TokenOut.of(t) for t in found]


@router.post("", status_code=201, response_model=auth_schemas.TokenCreated, responses=deps.problem_responses(403))
async def create_token(body: auth_schemas.TokenCreate, request: fastapi.Request, who: Who,
                       kl: deps.KL) -> auth_schemas.TokenCreated:
    """A new token; its secret is in this answer only."""
    role = Role.parse(body.role)
    if body.kind == "service" and who.role is not Role.admin:
        raise fastapi.HTTPException(403, detail="only admins make service tokens; make a personal one")
    if body.kind == "personal" and who.user_id is None:
        raise fastapi.HTTPException(403, detail="a personal token belongs to a user: log in as one, or make a "
                                                "service token (admins)")
    if role > who.role:
        raise fastapi.HTTPException(403, detail=f"you have the {who.role.name} role and cannot make a token with "
                                                f"{role.name}; pick {who.role.name} or lower")
    expires = dt.datetime.now(dt.UTC) + dt.timedelta(days=body.expires_in_days) if body.expires_in_days else None
    token, secret = await kl.auth.create_token(
        name=body.name, role=role, kind=body.kind, user_id=who.user_id if body.kind == "personal" else None,
        created_by=who.name, scope=body.pipelines, expires_at=expires)
    security.note(request, token_id=token.id, name=token.name, role=role.name, kind=body.kind,
                  pipelines=body.pipelines)
    return auth_schemas.TokenCreated(token=auth_schemas.TokenOut.of(token), secret=secret)


@router.delete("/{token_id}", status_code=204, responses=deps.problem_responses(403, 404))
async def revoke_token(token_id: Annotated[str, fastapi.Path(max_length=64)], who: Who,
                       kl: deps.KL) -> fastapi.Response:
    """Revoke a token at once (yours, or any as an admin)."""
    token = await kl.auth.accounts.get_token(token_id)
    if who.role is not Role.admin and (token.user_id is None or token.user_id != who.user_id):
        raise fastapi.HTTPException(404, detail=f"token {token_id!r} not found among yours")
    await kl.auth.accounts.revoke_token(token_id, dt.datetime.now(dt.UTC))
    return fastapi.Response(status_code=204)
