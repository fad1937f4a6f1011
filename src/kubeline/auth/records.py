"""Frozen records of the access-control tables (the store maps rows to these)."""

from __future__ import annotations

import dataclasses
import datetime as dt
from typing import Any

from kubeline.auth import roles


@dataclasses.dataclass(frozen=True)
class User:
    id: str
    username: str
    role: roles.Role
    email: str | None = None
    password_hash: str | None = dataclasses.field(default=None, repr=False)
    must_change_password: bool = False
    disabled: bool = False
    provider: str | None = None
    subject: str | None = None
    failed_logins: int = 0
    locked_until: dt.datetime | None = None
    created_at: dt.datetime | None = None
    last_login_at: dt.datetime | None = None
    grants: tuple[roles.Grant, ...] = ()


@dataclasses.dataclass(frozen=True)
class ApiToken:
    id: str
    name: str
    kind: str  # personal | service
    role: roles.Role
    token_hash: str = dataclasses.field(repr=False)
    user_id: str | None
    scope: tuple[str, ...] | None
    created_by: str
    created_at: dt.datetime
    expires_at: dt.datetime | None = None
    last_used_at: dt.datetime | None = None
    revoked_at: dt.datetime | None = None


@dataclasses.dataclass(frozen=True)
class Session:
    id_hash: str = dataclasses.field(repr=False)
    user_id: str
    csrf_token: str = dataclasses.field(repr=False)
    created_at: dt.datetime
    last_seen_at: dt.datetime
    expires_at: dt.datetime
    ip: str = ""


@dataclasses.dataclass(frozen=True)
class Invitation:
    id: str
    token_hash: str = dataclasses.field(repr=False)
    role: roles.Role
    email: str | None
    created_by: str
    created_at: dt.datetime
    expires_at: dt.datetime
    used_at: dt.datetime | None = None
    used_by: str | None = None


@dataclasses.dataclass(frozen=True)
class JoinRequest:
    id: str
    provider: str
    subject: str
    email: str | None
    username: str
    state: str  # pending | approved | rejected
    created_at: dt.datetime
    decided_at: dt.datetime | None = None
    decided_by: str | None = None


@dataclasses.dataclass(frozen=True)
class OAuthState:
    state_hash: str
    provider: str
    code_verifier: str = dataclasses.field(repr=False)
    nonce: str
    invitation: str | None
    created_at: dt.datetime


@dataclasses.dataclass(frozen=True)
class AuditEntry:
    id: int
    at: dt.datetime
    actor: str
    action: str
    target: str
    outcome: int
    ip: str
    detail: dict[str, Any]
