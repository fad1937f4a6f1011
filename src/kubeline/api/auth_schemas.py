"""API schemas of access control: users, grants, tokens, sessions, invitations, join requests, audit."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any, Literal

import pydantic

from kubeline.auth import passwords, records

RoleName = Literal["viewer", "operator", "admin"]
Username = Annotated[str, pydantic.StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9._@+-]{0,127}$")]
Target = Annotated[str, pydantic.StringConstraints(pattern=r"^(tag:)?[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")]


class Strict(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid")


class LoginIn(Strict):
    username: str = pydantic.Field(max_length=128)
    password: str = pydantic.Field(max_length=1024)


class PasswordIn(Strict):
    current: str = pydantic.Field(max_length=1024)
    new: str = pydantic.Field(min_length=passwords.MIN_LENGTH, max_length=1024)


class GrantIO(Strict):
    target: Target = pydantic.Field(description="A pipeline name, or tag:NAME for every pipeline with that tag.")
    role: RoleName


class UserOut(pydantic.BaseModel):
    id: str
    username: str
    email: str | None = None
    role: RoleName
    grants: list[GrantIO] = pydantic.Field(default_factory=list)
    provider: str | None = None
    disabled: bool = False
    must_change_password: bool = False
    created_at: dt.datetime | None = None
    last_login_at: dt.datetime | None = None

    @classmethod
    def of(cls, user: records.User) -> UserOut:
        return cls(id=user.id, username=user.username, email=user.email, role=user.role.name,
                   grants=[GrantIO(target=g.target, role=g.role.name) for g in user.grants],
                   provider=user.provider, disabled=user.disabled, must_change_password=user.must_change_password,
                   created_at=user.created_at, last_login_at=user.last_login_at)


class MeOut(pydantic.BaseModel):
    name: str
    kind: str
    role: RoleName
    user: UserOut | None = None
    scope: list[str] | None = None
    must_change_password: bool = False
    csrf_token: str | None = pydantic.Field(None, description="Send as X-CSRF-Token with every change (browsers).")


class UserCreate(Strict):
    username: Username
    role: RoleName = "viewer"
    email: str | None = pydantic.Field(None, max_length=320)
    password: str | None = pydantic.Field(None, min_length=passwords.MIN_LENGTH, max_length=1024,
                                          description="Omit: a one-time password is made.")
    grants: list[GrantIO] = pydantic.Field(default_factory=list)


class UserCreated(pydantic.BaseModel):
    user: UserOut
    one_time_password: str | None = pydantic.Field(None, description="Shown once; changed at first login.")


class UserPatch(Strict):
    role: RoleName | None = None
    disabled: pydantic.StrictBool | None = None  # 0 or "yes" is refused, not read as a flag
    email: str | None = pydantic.Field(None, max_length=320)


class TokenCreate(Strict):
    name: str = pydantic.Field(min_length=1, max_length=128)
    role: RoleName = "viewer"
    kind: Literal["personal", "service"] = "personal"
    pipelines: list[Target] | None = pydantic.Field(
        None, description="Limit the token to these pipelines (names or tag:NAME); omit for all.")
    expires_in_days: float | None = pydantic.Field(90, gt=0, le=3650, description="null: never expires.")


class TokenOut(pydantic.BaseModel):
    id: str
    name: str
    kind: str
    role: RoleName
    pipelines: list[str] | None = None
    user_id: str | None = None
    created_by: str
    created_at: dt.datetime
    expires_at: dt.datetime | None = None
    last_used_at: dt.datetime | None = None
    revoked_at: dt.datetime | None = None

    @classmethod
    def of(cls, token: records.ApiToken) -> TokenOut:
        return cls(id=token.id, name=token.name, kind=token.kind, role=token.role.name,
                   pipelines=list(token.scope) if token.scope is not None else None, user_id=token.user_id,
                   created_by=token.created_by, created_at=token.created_at, expires_at=token.expires_at,
                   last_used_at=token.last_used_at, revoked_at=token.revoked_at)


class TokenCreated(pydantic.BaseModel):
    token: TokenOut
    secret: str = pydantic.Field(description="The token itself: shown once, only its digest is stored.")


class InvitationCreate(Strict):
    role: RoleName = "viewer"
    email: str | None = pydantic.Field(None, max_length=320)
    expires_in_hours: float = pydantic.Field(72, gt=0, le=24 * 30)


class InvitationOut(pydantic.BaseModel):
    id: str
    role: RoleName
    email: str | None = None
    created_by: str
    created_at: dt.datetime
    expires_at: dt.datetime
    used_at: dt.datetime | None = None
    used_by: str | None = None

    @classmethod
    def of(cls, item: records.Invitation) -> InvitationOut:
        return cls(id=item.id, role=item.role.name, email=item.email, created_by=item.created_by,
                   created_at=item.created_at, expires_at=item.expires_at, used_at=item.used_at, used_by=item.used_by)


class InvitationCreated(pydantic.BaseModel):
    invitation: InvitationOut
    token: str = pydantic.Field(description="Shown once: the invitee accepts with it.")
    link: str


class InvitationAcceptLocal(Strict):
    token: str = pydantic.Field(max_length=128)
    username: Username
    password: str = pydantic.Field(min_length=passwords.MIN_LENGTH, max_length=1024)


class JoinRequestOut(pydantic.BaseModel):
    id: str
    provider: str
    username: str
    email: str | None = None
    state: str
    created_at: dt.datetime
    decided_at: dt.datetime | None = None
    decided_by: str | None = None

    @classmethod
    def of(cls, item: records.JoinRequest) -> JoinRequestOut:
        return cls(id=item.id, provider=item.provider, username=item.username, email=item.email, state=item.state,
                   created_at=item.created_at, decided_at=item.decided_at, decided_by=item.decided_by)


class JoinDecision(Strict):
    role: RoleName = "viewer"


class AuditOut(pydantic.BaseModel):
    id: int
    at: dt.datetime
    actor: str
    action: str
    target: str
    outcome: int
    ip: str
    detail: dict[str, Any]

    @classmethod
    def of(cls, item: records.AuditEntry) -> AuditOut:
        return cls(**item.__dict__)


class AuditList(pydantic.BaseModel):
    items: list[AuditOut]
    next: int | None = pydantic.Field(None, description="before_id of the next (older) page.")
