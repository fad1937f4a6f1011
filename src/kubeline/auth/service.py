"""``AuthService``: identities in the store. Who a token or session cookie is, password login with
throttling, the first admin, API tokens, sessions.

Failures raise ``Denied`` with the HTTP status the API answers (401 not logged in, 403 not
allowed, 429 locked) and a message that says what to do.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime as dt
import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

from kubeline import settings as settings_
from kubeline.auth import passwords, records, roles, tokens
from kubeline.domain import errors
from kubeline.storage import wakeups
from kubeline.storage.sql import accounts as accounts_

log = logging.getLogger("kubeline.auth")
FIRST_ADMIN = "admin"
ADMIN_TOKEN_NAME = "admin (KUBELINE_ADMIN_TOKEN)"  # noqa: S105 - a name
TOUCH_EVERY = dt.timedelta(seconds=60)  # last-used / last-seen writes at most this often
TOKEN_CACHE_SECONDS = 5.0  # a token's rows are read again after this long at the latest
TOKEN_CACHE_SIZE = 10_000  # entries; the cache starts over past it


class Denied(Exception):
    def __init__(self, status: int, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.retry_after = retry_after


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


@dataclasses.dataclass
class _Known:
    """A token's rows as last read (keyed by the token's digest, never the token itself)."""

    token: records.ApiToken
    owner: records.User | None
    read_at: float  # monotonic
    touched_at: dt.datetime | None


@dataclasses.dataclass(frozen=True)
class NewSession:
    raw_id: str
    session: records.Session
    user: records.User


class AuthService:
    def __init__(self, *, accounts: accounts_.Accounts, settings: settings_.Settings,
                 clock: Callable[[], dt.datetime] = _now) -> None:
        self.accounts = accounts
        self.settings = settings
        self.clock = clock
        # Who a token is, without two reads per request. Revocation and changes of the owner
        # (role, grants, disabled, deleted) are honoured at once: those writes publish
        # ``Channel.ACCOUNTS`` (NOTIFY on PostgreSQL, to every replica; in process on SQLite) and
        # the cache is dropped when one arrived; a lost LISTEN connection wakes every waiter on
        # reconnect. Expiry is checked on every request. Entries older than TOKEN_CACHE_SECONDS
        # are read again whatever happens.
        self._known: dict[str, _Known] = {}
        self._changes: wakeups.Waiter | None = None
        self._watch = contextlib.AsyncExitStack()

    # first start -------------------------------------------------------------------------------
    async def ensure_first_admin(self) -> str | None:
        """With no user at all, create ``admin``; the one-time password when this call made one."""
        if await self.accounts.count_users():
            return None
        given = self.settings.admin_password.get_secret_value() if self.settings.admin_password else None
        password = given or passwords.one_time_password()
        user = records.User(id=tokens.new_id(), username=FIRST_ADMIN, role=roles.Role.admin,
                            password_hash=passwords.hash_password(password), must_change_password=True,
                            created_at=self.clock())
        try:
            await self.accounts.create_user(user)
        except errors.ConflictError:  # another replica made it first
            return None
        return None if given else password

    async def ensure_admin_token(self) -> None:
        if self.settings.admin_token is None:
            return
        raw = self.settings.admin_token.get_secret_value()
        if await self.accounts.find_token(tokens.digest(raw)) is not None:
            return
        await self.accounts.create_token(records.ApiToken(
            id=tokens.new_id(), name=ADMIN_TOKEN_NAME, kind="service", role=roles.Role.admin,
            token_hash=tokens.digest(raw), user_id=None, scope=None, created_by="KUBELINE_ADMIN_TOKEN",
            created_at=self.clock()))

    # who is asking -----------------------------------------------------------------------------
    async def principal_for_token(self, raw: str) -> roles.Principal:
        digest = tokens.digest(raw.strip())
        known = await self._known_token(digest)
        now = self.clock()
        if known is None:
            raise Denied(401, "unknown API token: create one with `kubeline login` or POST /api/v1/tokens")
        token, owner = known.token, known.owner
        if token.revoked_at is not None:
            raise Denied(401, f"API token {token.name!r} was revoked: create a new one")
        if token.expires_at is not None and token.expires_at <= now:
            raise Denied(401, f"API token {token.name!r} expired at {token.expires_at:%Y-%m-%d %H:%M} UTC: "
                              "create a new one")
        role, name = token.role, token.name
        grants: tuple[roles.Grant, ...] = ()
        if token.user_id is not None:
            if owner is None:
                raise Denied(401, f"the owner of API token {token.name!r} was deleted")
            if owner.disabled:
                raise Denied(401, f"user {owner.username!r} is disabled; their tokens do not work")
            role = min(role, owner.role)
            grants = tuple(roles.Grant(g.target, min(g.role, token.role)) for g in owner.grants)
            name = f"{owner.username}/{token.name}"
        if known.touched_at is None or now - known.touched_at > TOUCH_EVERY:
            known.touched_at = now
            await self.accounts.touch_token(token.id, now)
        return roles.Principal(name=name, kind="token", role=role, user_id=token.user_id, token_id=token.id,
                               grants=grants, scope=token.scope)

    async def _known_token(self, digest: str) -> _Known | None:
        """The token with this digest and its owner, from the cache when still good (see __init__)."""
        if self._changes is None or self._changes.loop is not asyncio.get_running_loop():
            await self._watch.aclose()  # a waiter of a loop that ended is woken no more
            self._known.clear()
            self._watch = contextlib.AsyncExitStack()
            self._changes = await self._watch.enter_async_context(
                self.accounts.database.wakeups.subscribe(wakeups.Channel.ACCOUNTS))
        if self._changes.take():
            self._known.clear()
        known = self._known.get(digest)
        if known is not None and time.monotonic() - known.read_at < TOKEN_CACHE_SECONDS:
            return known
        token = await self.accounts.find_token(digest)
        if token is None:
            self._known.pop(digest, None)
            return None
        owner = None
        if token.user_id is not None:
            with contextlib.suppress(errors.NotFoundError):
                owner = await self.accounts.get_user(token.user_id)
        fresh = _Known(token=token, owner=owner, read_at=time.monotonic(),
                       touched_at=known.touched_at if known is not None else token.last_used_at)
        if self._changes.take():  # changed while we read: good for this request, not to keep
            self._known.clear()
            return fresh
        if len(self._known) >= TOKEN_CACHE_SIZE:
            self._known.clear()
        self._known[digest] = fresh
        return fresh

    async def principal_for_session(self, raw_id: str) -> tuple[roles.Principal, records.Session]:
        session = await self.accounts.get_session(tokens.digest(raw_id))
        now = self.clock()
        expired = "your session has ended; log in again (POST /api/v1/auth/login)"
        if session is None:
            raise Denied(401, expired)
        idle = dt.timedelta(minutes=self.settings.session_idle_minutes)
        if session.expires_at <= now or session.last_seen_at + idle <= now:
            await self.accounts.delete_session(session.id_hash)
            raise Denied(401, expired)
        try:
            user = await self.accounts.get_user(session.user_id)
        except errors.NotFoundError:
            raise Denied(401, expired) from None
        if user.disabled:
            raise Denied(401, f"user {user.username!r} is disabled")
        if now - session.last_seen_at > TOUCH_EVERY:
            await self.accounts.touch_session(session.id_hash, now)
        return self.principal_of(user, session_id=session.id_hash), session

    @staticmethod
    def principal_of(user: records.User, *, session_id: str | None = None) -> roles.Principal:
        return roles.Principal(name=user.username, kind="user", role=user.role, user_id=user.id,
                               grants=user.grants, must_change_password=user.must_change_password,
                               session_id=session_id)

    # password login ----------------------------------------------------------------------------
    async def check_password(self, username: str, password: str) -> records.User:
        """The user when the password is right; ``Denied`` (401, or 429 while locked) otherwise."""
        user = await self.accounts.find_user(username)
        now = self.clock()
        wrong = "wrong username or password"
        if user is not None and user.locked_until is not None and user.locked_until > now:
            wait = (user.locked_until - now).total_seconds()
            raise Denied(429, f"too many failed logins for {username!r}: try again in {int(wait) + 1}s",
                         retry_after=wait)
        if not passwords.verify(user.password_hash if user else None, password) or user is None:
            if user is not None:
                await self.accounts.count_login_failure(
                    user.id, lock_after=self.settings.login_lock_after,
                    lock_for=dt.timedelta(seconds=self.settings.login_lock_seconds), now=now)
            raise Denied(401, wrong)
        if user.disabled:
            raise Denied(403, f"user {username!r} is disabled; ask an admin")
        return await self.accounts.update_user(user.id, failed_logins=0, locked_until=None, last_login_at=now)

    async def start_session(self, user: records.User, *, ip: str) -> NewSession:
        """A new session (a new id every login: a cookie planted before login is worthless)."""
        raw = tokens.new_secret()
        now = self.clock()
        session = records.Session(id_hash=tokens.digest(raw), user_id=user.id, csrf_token=tokens.new_secret()[:43],
                                  created_at=now, last_seen_at=now,
                                  expires_at=now + dt.timedelta(hours=self.settings.session_max_hours), ip=ip[:64])
        await self.accounts.create_session(session)
        return NewSession(raw_id=raw, session=session, user=user)

    async def end_session(self, id_hash: str) -> None:
        await self.accounts.delete_session(id_hash)

    async def change_password(self, user_id: str, *, current: str, new: str, keep_session: str | None) -> None:
        user = await self.accounts.get_user(user_id)
        if user.password_hash is None:
            raise Denied(403, f"user {user.username!r} logs in through {user.provider}; it has no password here")
        if not passwords.verify(user.password_hash, current):
            raise Denied(403, "the current password is wrong")
        if new == current:
            raise errors.InvalidInputError("the new password must differ from the current one")
        try:
            passwords.check_policy(new, username=user.username)
        except passwords.WeakPassword as exc:
            raise errors.InvalidInputError(str(exc)) from None
        await self.accounts.update_user(user.id, password_hash=passwords.hash_password(new),
                                        must_change_password=False)
        await self.accounts.delete_sessions(user_id=user.id, keep=keep_session)

    # users and tokens ----------------------------------------------------------------------------
    async def create_local_user(self, *, username: str, role: roles.Role, password: str | None,
                                email: str | None = None,
                                grants: Sequence[roles.Grant] = ()) -> tuple[records.User, str]:
        """A user with a password (a one-time one when none is given: they must change it)."""
        chosen = password or passwords.one_time_password()
        if password:
            try:
                passwords.check_policy(password, username=username)
            except passwords.WeakPassword as exc:
                raise errors.InvalidInputError(str(exc)) from None
        user = await self.accounts.create_user(records.User(
            id=tokens.new_id(), username=username, role=role, email=email,
            password_hash=passwords.hash_password(chosen), must_change_password=password is None,
            created_at=self.clock(), grants=tuple(grants)))
        return user, ("" if password else chosen)

    async def create_token(self, *, name: str, role: roles.Role, kind: str, user_id: str | None, created_by: str,
                           scope: Sequence[str] | None = None,
                           expires_at: dt.datetime | None = None) -> tuple[records.ApiToken, str]:
        """A new token and its secret (shown once; only the digest is kept)."""
        raw = tokens.new_secret(tokens.API_TOKEN_PREFIX)
        token = records.ApiToken(id=tokens.new_id(), name=name, kind=kind, role=role, token_hash=tokens.digest(raw),
                                 user_id=user_id, scope=tuple(scope) if scope is not None else None,
                                 created_by=created_by, created_at=self.clock(), expires_at=expires_at)
        await self.accounts.create_token(token)
        return token, raw

    # audit ---------------------------------------------------------------------------------------
    async def audit(self, *, actor: str, action: str, target: str, outcome: int, ip: str = "",
                    detail: dict[str, Any] | None = None) -> None:
        """One audit row (rows older than ``audit_retention_days`` go in the retention pass: kubeline.cleanup)."""
        now = self.clock()
        await self.accounts.append_audit(at=now, actor=actor, action=action, target=target, outcome=outcome,
                                         ip=ip, detail=detail or {})

    def audit_row(self, *, actor: str, action: str, target: str, outcome: int, ip: str = "",
                  detail: dict[str, Any] | None = None) -> dict[str, Any]:
        """The row ``audit`` would write, for a store method that writes it with its own change."""
        return accounts_.audit_row(at=self.clock(), actor=actor, action=action, target=target, outcome=outcome,
                                   ip=ip, detail=detail or {})

    # invitations and join requests ---------------------------------------------------------------
    async def accept_invitation(self, raw: str, *, username: str, password: str | None = None,
                                provider: str | None = None, subject: str | None = None,
                                email: str | None = None) -> records.User:
        """A user from an invitation (once, before it expires); a password or a provider login."""
        digest = tokens.digest(raw)
        invitation = await self.accounts.find_invitation(digest)
        if password is not None:
            try:
                passwords.check_policy(password, username=username)
            except passwords.WeakPassword as exc:
                raise errors.InvalidInputError(str(exc)) from None
        if invitation is None or not await self.accounts.use_invitation(digest, by=username, now=self.clock()):
            raise Denied(403, "this invitation is unknown, used already or expired: ask an admin for a new one")
        return await self.accounts.create_user(records.User(
            id=tokens.new_id(), username=username, role=invitation.role, email=email or invitation.email,
            password_hash=passwords.hash_password(password) if password else None, provider=provider,
            subject=subject, created_at=self.clock()))

    async def approve_join_request(self, request_id: str, *, role: roles.Role, by: str) -> records.User:
        item = await self.accounts.get_join_request(request_id)
        if item.state != "pending":
            raise errors.ConflictError(f"join request {request_id!r} is {item.state} already")
        user = await self.accounts.create_user(records.User(
            id=tokens.new_id(), username=item.username, role=role, email=item.email, provider=item.provider,
            subject=item.subject, created_at=self.clock()))
        await self.accounts.decide_join_request(request_id, state="approved", by=by, now=self.clock())
        return user

    # provider logins -----------------------------------------------------------------------------
    async def provider_login(self, *, provider: str, subject: str, username: str, email: str | None,
                             role: roles.Role | None,
                             invitation_hash: str | None) -> records.User | records.JoinRequest:
        """The user a provider login is (made now from an invitation or the role mapping), or the
        join request it became."""
        user = await self.accounts.find_user_by_subject(provider, subject)
        if user is not None:
            if user.disabled:
                raise Denied(403, f"user {user.username!r} is disabled; ask an admin")
            if role is not None and role is not user.role:
                user = await self.accounts.update_user(user.id, role=role)
            return await self.accounts.update_user(user.id, last_login_at=self.clock())
        name = await self._free_username(username, provider)
        if invitation_hash is not None:
            invitation = await self.accounts.find_invitation(invitation_hash)
            if invitation is None or not await self.accounts.use_invitation(invitation_hash, by=name, now=self.clock()):
                raise Denied(403, "this invitation is unknown, used already or expired: ask an admin for a new one")
            role = max(invitation.role, role) if role is not None else invitation.role
        if role is None:
            return await self.accounts.upsert_join_request(records.JoinRequest(
                id=tokens.new_id(), provider=provider, subject=subject, email=email, username=name, state="pending",
                created_at=self.clock()))
        return await self.accounts.create_user(records.User(
            id=tokens.new_id(), username=name, role=role, email=email, provider=provider, subject=subject,
            created_at=self.clock(), last_login_at=self.clock()))

    async def _free_username(self, wanted: str, provider: str) -> str:
        base = "".join(c if c.isalnum() or c in "._@+-" else "-" for c in wanted)[:100].strip("-.") or "user"
        for candidate in (base, f"{base}-{provider}", f"{base}-{tokens.new_id()[:6]}"):
            if await self.accounts.find_user(candidate) is None:
                return candidate
        return f"{base}-{tokens.new_id()}"
