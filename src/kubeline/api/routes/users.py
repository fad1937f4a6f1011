"""``/api/v1/users`` (admins): users, their global role and per-pipeline grants; invitations; join
requests of people who logged in through a provider and wait for an admin."""

from __future__ import annotations

import datetime as dt
from typing import Annotated

import fastapi

from kubeline.api import access, auth_schemas, deps, security
from kubeline.auth import records, roles, tokens

Role = roles.Role
router = fastapi.APIRouter(tags=["users"], dependencies=[access.requires(Role.admin)])
Who = Annotated[roles.Principal, access.requires(Role.admin)]
Id = Annotated[str, fastapi.Path(max_length=64)]


def _grants(items: list[auth_schemas.GrantIO]) -> list[roles.Grant]:
    return [roles.Grant(target=g.target, role=Role.parse(g.role)) for g in items]


async def _keep_an_admin(kl: deps.KL, user: records.User) -> None:
    admins = [u for u in await kl.auth.accounts.list_users() if u.role is Role.admin and not u.disabled]
    if [u.id for u in admins] == [user.id]:
        raise fastapi.HTTPException(409, detail=f"{user.username!r} is the last admin: make another admin first")


@router.get("/users", response_model=list[auth_schemas.UserOut])
async def list_users(kl: deps.KL) -> list[auth_schemas.UserOut]:
    return [auth_schemas.UserOut.of(u) for u in await kl.auth.accounts.list_users()]


@router.post("/users", status_code=201, response_model=auth_schemas.UserCreated,
             responses=deps.problem_responses(409, 422))
async def create_user(body: auth_schemas.UserCreate, request: fastapi.Request, kl: deps.KL) -> auth_schemas.UserCreated:
    """A local user; without a password a one-time one is made (shown once, changed at first login)."""
    user, once = await kl.auth.create_local_user(username=body.username, role=Role.parse(body.role),
                                                 password=body.password, email=body.email, grants=_grants(body.grants))
    security.note(request, user=user.username, role=user.role.name)
    return auth_schemas.UserCreated(user=auth_schemas.UserOut.of(user), one_time_password=once or None)


@router.get("/users/{user_id}", response_model=auth_schemas.UserOut, responses=deps.problem_responses(404))
async def get_user(user_id: Id, kl: deps.KL) -> auth_schemas.UserOut:
    return auth_schemas.UserOut.of(await kl.auth.accounts.get_user(user_id))


@router.patch("/users/{user_id}", response_model=auth_schemas.UserOut, responses=deps.problem_responses(404, 409))
async def update_user(user_id: Id, body: auth_schemas.UserPatch, request: fastapi.Request,
                      kl: deps.KL) -> auth_schemas.UserOut:
    """Change the global role, disable or enable (a disabled user's sessions end), or the email."""
    user = await kl.auth.accounts.get_user(user_id)
    # null role/disabled mean "unchanged" (the columns are required); a null email clears it
    fields = {k: v for k, v in body.model_dump(exclude_unset=True).items() if v is not None or k == "email"}
    if (fields.get("role") not in (None, "admin") or fields.get("disabled")) and user.role is Role.admin:
        await _keep_an_admin(kl, user)
    if "role" in fields:
        fields["role"] = Role.parse(fields["role"])
    updated = await kl.auth.accounts.update_user(user_id, **fields)
    if updated.disabled:
        await kl.auth.accounts.delete_sessions(user_id=user_id)
    security.note(request, user=user.username, **body.model_dump(exclude_unset=True))
    return auth_schemas.UserOut.of(updated)


@router.delete("/users/{user_id}", status_code=204, responses=deps.problem_responses(404, 409))
async def delete_user(user_id: Id, request: fastapi.Request, kl: deps.KL) -> fastapi.Response:
    user = await kl.auth.accounts.get_user(user_id)
    if user.role is Role.admin:
        await _keep_an_admin(kl, user)
    await kl.auth.accounts.delete_user(user_id)
    security.note(request, user=user.username)
    return fastapi.Response(status_code=204)


@router.put("/users/{user_id}/grants", response_model=auth_schemas.UserOut, responses=deps.problem_responses(404))
async def set_grants(user_id: Id, body: list[auth_schemas.GrantIO], request: fastapi.Request,
                     kl: deps.KL) -> auth_schemas.UserOut:
    """Replace the user's per-pipeline grants (``{"target": "sales" or "tag:finance", "role": ...}``)."""
    updated = await kl.auth.accounts.set_grants(user_id, _grants(body))
    security.note(request, user=updated.username, grants=[g.model_dump() for g in body])
    return auth_schemas.UserOut.of(updated)


# invitations -----------------------------------------------------------------------------------
@router.post("/invitations", status_code=201, response_model=auth_schemas.InvitationCreated)
async def create_invitation(body: auth_schemas.InvitationCreate, request: fastapi.Request, who: Who,
                            kl: deps.KL) -> auth_schemas.InvitationCreated:
    """An invitation with a role; its token (in the link) is shown once and works once, until it expires."""
    raw = tokens.new_secret()
    now = dt.datetime.now(dt.UTC)
    item = records.Invitation(id=tokens.new_id(), token_hash=tokens.digest(raw), role=Role.parse(body.role),
                              email=body.email, created_by=who.name, created_at=now,
                              expires_at=now + dt.timedelta(hours=body.expires_in_hours))
    await kl.auth.accounts.create_invitation(item)
    security.note(request, invitation=item.id, role=body.role, email=body.email)
    base = (kl.settings.public_url if "public_url" in kl.settings.model_fields_set
            else str(request.base_url)).rstrip("/")
    return auth_schemas.InvitationCreated(invitation=auth_schemas.InvitationOut.of(item), token=raw,
                                          link=f"{base}/invite#{raw}")


@router.get("/invitations", response_model=list[auth_schemas.InvitationOut])
async def list_invitations(kl: deps.KL) -> list[auth_schemas.InvitationOut]:
    return [auth_schemas.InvitationOut.of(i) for i in await kl.auth.accounts.list_invitations()]


@router.delete("/invitations/{invitation_id}", status_code=204, responses=deps.problem_responses(404))
async def delete_invitation(invitation_id: Id, kl: deps.KL) -> fastapi.Response:
    await kl.auth.accounts.delete_invitation(invitation_id)
    return fastapi.Response(status_code=204)


# join requests ---------------------------------------------------------------------------------
@router.get("/join-requests", response_model=list[auth_schemas.JoinRequestOut])
async def list_join_requests(kl: deps.KL, state: Annotated[str | None, fastapi.Query(
        pattern="^(pending|approved|rejected)$")] = "pending") -> list[auth_schemas.JoinRequestOut]:
    return [auth_schemas.JoinRequestOut.of(j) for j in await kl.auth.accounts.list_join_requests(state=state)]


@router.post("/join-requests/{request_id}/approve", response_model=auth_schemas.UserOut,
             responses=deps.problem_responses(404, 409))
async def approve_join_request(request_id: Id, body: auth_schemas.JoinDecision, request: fastapi.Request, who: Who,
                               kl: deps.KL) -> auth_schemas.UserOut:
    """Let the person in with ``role``: they log in through their provider again and get a session."""
    user = await kl.auth.approve_join_request(request_id, role=Role.parse(body.role), by=who.name)
    security.note(request, user=user.username, role=body.role)
    return auth_schemas.UserOut.of(user)


@router.post("/join-requests/{request_id}/reject", response_model=auth_schemas.JoinRequestOut,
             responses=deps.problem_responses(404, 409))
async def reject_join_request(request_id: Id, who: Who, kl: deps.KL) -> auth_schemas.JoinRequestOut:
    if not await kl.auth.accounts.decide_join_request(request_id, state="rejected", by=who.name,
                                                      now=dt.datetime.now(dt.UTC)):
        raise fastapi.HTTPException(409, detail=f"join request {request_id!r} was decided already (or is unknown)")
    return auth_schemas.JoinRequestOut.of(await kl.auth.accounts.get_join_request(request_id))
