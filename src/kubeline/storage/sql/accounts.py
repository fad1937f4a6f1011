"""The access-control tables: users and grants, API tokens, sessions, invitations, join
requests, OAuth states, audit log (``SqlStore.accounts``).

Rows map to the frozen records of ``kubeline.auth.records``. One-use things (an invitation, an
OAuth state) are consumed by a single conditional UPDATE/DELETE, so two replicas racing on the
same link cannot both succeed.
"""

from __future__ import annotations

import builtins
import datetime as dt
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy import exc as sa_exc

from kubeline.auth import records, roles
from kubeline.domain import errors
from kubeline.storage import wakeups
from kubeline.storage.sql import audit_rows, engines
from kubeline.storage.sql import tables as T


def _user(row: sa.RowMapping, grants: Sequence[roles.Grant] = ()) -> records.User:
    return records.User(
        id=row["id"], username=row["username"], role=roles.Role.parse(row["role"]), email=row["email"],
        password_hash=row["password_hash"], must_change_password=row["must_change_password"],
        disabled=row["disabled"], provider=row["provider"], subject=row["subject"],
        failed_logins=row["failed_logins"], locked_until=row["locked_until"], created_at=row["created_at"],
        last_login_at=row["last_login_at"], grants=tuple(grants))


def _token(row: sa.RowMapping) -> records.ApiToken:
    scope = row["scope"]
    return records.ApiToken(
        id=row["id"], name=row["name"], kind=row["kind"], role=roles.Role.parse(row["role"]),
        token_hash=row["token_hash"], user_id=row["user_id"], scope=tuple(scope) if scope is not None else None,
        created_by=row["created_by"], created_at=row["created_at"], expires_at=row["expires_at"],
        last_used_at=row["last_used_at"], revoked_at=row["revoked_at"])


_LOGIN_BOOKKEEPING = frozenset({"failed_logins", "locked_until", "last_login_at"})  # no identity changes


def _values(record: Any, table: sa.Table) -> dict[str, Any]:
    names = {c.name for c in table.columns}
    out = {k: getattr(record, k) for k in names if hasattr(record, k)}
    for key, value in out.items():
        if isinstance(value, roles.Role):
            out[key] = value.name
    return out


def audit_row(*, at: dt.datetime, actor: str, action: str, target: str, outcome: int, ip: str,
              detail: dict[str, Any]) -> dict[str, Any]:
    """The ``audit_log`` row (written by ``append_audit``, or with the change itself: ``create_run(audit=...)``)."""
    return {"at": at, "actor": actor[:200], "action": action[:64], "target": target, "outcome": outcome,
            "ip": ip[:64], "detail": detail}


class Accounts:
    def __init__(self, database: engines.Database) -> None:
        self.database = database
        self.audit_writer = audit_rows.AuditWriter(database)

    async def _rows(self, query: Any) -> builtins.list[sa.RowMapping]:
        return await self.database.run(lambda conn: list(conn.execute(query).mappings()), write=False)

    async def _exec(self, stmt: Any, *, identities: bool = False) -> int:
        """``identities``: the change alters who a token or user is (role, grants, revoked,
        disabled): every process's cached identities are dropped when it commits."""
        def run(conn: sa.Connection) -> int:
            if identities:
                engines.notice(conn, wakeups.Channel.ACCOUNTS)
            return int(conn.execute(stmt).rowcount)

        return await self.database.run(run, write=True)

    # users -------------------------------------------------------------------------------------
    async def create_user(self, user: records.User) -> records.User:
        values = _values(user, T.users)

        def insert(conn: sa.Connection) -> None:
            conn.execute(sa.insert(T.users).values(values))
            for grant in user.grants:
                conn.execute(sa.insert(T.grants).values(user_id=user.id, target=grant.target, role=grant.role.name))

        try:
            await self.database.run(insert, write=True)
        except sa_exc.IntegrityError:
            raise errors.ConflictError(f"a user named {user.username!r} (or with that login) exists already; "
                                       "pick another username") from None
        return await self.get_user(user.id)

    async def _with_grants(self, found: builtins.list[sa.RowMapping]) -> builtins.list[records.User]:
        if not found:
            return []
        ids = [r["id"] for r in found]
        grant_rows = await self._rows(sa.select(T.grants).where(T.grants.c.user_id.in_(ids)))
        by_user: dict[str, builtins.list[roles.Grant]] = {}
        for g in grant_rows:
            grant = roles.Grant(target=g["target"], role=roles.Role.parse(g["role"]))
            by_user.setdefault(g["user_id"], []).append(grant)
        return [_user(r, sorted(by_user.get(r["id"], []), key=lambda g: g.target)) for r in found]

    async def get_user(self, user_id: str) -> records.User:
        found = await self._with_grants(await self._rows(sa.select(T.users).where(T.users.c.id == user_id)))
        if not found:
            raise errors.NotFoundError(f"user {user_id!r} not found (list users with GET /api/v1/users)")
        return found[0]

    async def find_user(self, username: str) -> records.User | None:
        found = await self._with_grants(await self._rows(sa.select(T.users).where(T.users.c.username == username)))
        return found[0] if found else None

    async def find_user_by_subject(self, provider: str, subject: str) -> records.User | None:
        query = sa.select(T.users).where(T.users.c.provider == provider, T.users.c.subject == subject)
        found = await self._with_grants(await self._rows(query))
        return found[0] if found else None

    async def list_users(self) -> builtins.list[records.User]:
        return await self._with_grants(await self._rows(sa.select(T.users).order_by(T.users.c.username)))

    async def count_users(self) -> int:
        found = await self._rows(sa.select(sa.func.count().label("n")).select_from(T.users))
        return int(found[0]["n"])

    async def update_user(self, user_id: str, **fields: Any) -> records.User:
        values = {k: (v.name if isinstance(v, roles.Role) else v) for k, v in fields.items()}
        if not values:  # nothing to change (an empty patch): the user as it is, or NotFoundError
            return await self.get_user(user_id)
        stmt = sa.update(T.users).where(T.users.c.id == user_id).values(values)
        if not await self._exec(stmt, identities=not values.keys() <= _LOGIN_BOOKKEEPING):
            raise errors.NotFoundError(f"user {user_id!r} not found")
        return await self.get_user(user_id)

    async def count_login_failure(self, user_id: str, *, lock_after: int, lock_for: dt.timedelta,
                                  now: dt.datetime) -> records.User:
        """One more failed password; at ``lock_after`` failures the account is locked for ``lock_for``."""
        def bump(conn: sa.Connection) -> None:
            row = conn.execute(sa.select(T.users.c.failed_logins).where(T.users.c.id == user_id)).one()
            failures = int(row[0]) + 1
            locked = now + lock_for * (2 ** ((failures - lock_after) // lock_after)) if failures >= lock_after else None
            conn.execute(sa.update(T.users).where(T.users.c.id == user_id)
                         .values(failed_logins=failures, locked_until=locked))

        await self.database.run(bump, write=True)
        return await self.get_user(user_id)

    async def delete_user(self, user_id: str) -> None:
        def delete(conn: sa.Connection) -> int:
            engines.notice(conn, wakeups.Channel.ACCOUNTS)
            for table in (T.grants, T.sessions, T.api_tokens):
                conn.execute(sa.delete(table).where(table.c.user_id == user_id))
            return conn.execute(sa.delete(T.users).where(T.users.c.id == user_id)).rowcount

        if not await self.database.run(delete, write=True):
            raise errors.NotFoundError(f"user {user_id!r} not found")

    async def set_grants(self, user_id: str, grants: Sequence[roles.Grant]) -> records.User:
        def replace(conn: sa.Connection) -> None:
            engines.notice(conn, wakeups.Channel.ACCOUNTS)
            conn.execute(sa.delete(T.grants).where(T.grants.c.user_id == user_id))
            for grant in grants:
                conn.execute(sa.insert(T.grants).values(user_id=user_id, target=grant.target, role=grant.role.name))

        await self.get_user(user_id)
        await self.database.run(replace, write=True)
        return await self.get_user(user_id)

    # API tokens --------------------------------------------------------------------------------
    async def create_token(self, token: records.ApiToken) -> records.ApiToken:
        values = _values(token, T.api_tokens)
        values["scope"] = list(token.scope) if token.scope is not None else None
        await self.database.run(lambda conn: conn.execute(sa.insert(T.api_tokens).values(values)), write=True)
        return token

    async def find_token(self, token_hash: str) -> records.ApiToken | None:
        found = await self._rows(sa.select(T.api_tokens).where(T.api_tokens.c.token_hash == token_hash))
        return _token(found[0]) if found else None

    async def get_token(self, token_id: str) -> records.ApiToken:
        found = await self._rows(sa.select(T.api_tokens).where(T.api_tokens.c.id == token_id))
        if not found:
            raise errors.NotFoundError(f"token {token_id!r} not found (list tokens with GET /api/v1/tokens)")
        return _token(found[0])

    async def list_tokens(self, *, user_id: str | None = None) -> builtins.list[records.ApiToken]:
        query = sa.select(T.api_tokens).order_by(T.api_tokens.c.created_at)
        if user_id is not None:
            query = query.where(T.api_tokens.c.user_id == user_id)
        return [_token(r) for r in await self._rows(query)]

    async def touch_token(self, token_id: str, at: dt.datetime) -> None:
        await self._exec(sa.update(T.api_tokens).where(T.api_tokens.c.id == token_id).values(last_used_at=at))

    async def revoke_token(self, token_id: str, at: dt.datetime) -> None:
        table = T.api_tokens
        await self._exec(sa.update(table).where(table.c.id == token_id, table.c.revoked_at.is_(None))
                         .values(revoked_at=at), identities=True)

    # sessions ----------------------------------------------------------------------------------
    async def create_session(self, session: records.Session) -> None:
        values = _values(session, T.sessions)
        await self.database.run(lambda conn: conn.execute(sa.insert(T.sessions).values(values)), write=True)

    async def get_session(self, id_hash: str) -> records.Session | None:
        found = await self._rows(sa.select(T.sessions).where(T.sessions.c.id_hash == id_hash))
        return records.Session(**dict(found[0])) if found else None

    async def touch_session(self, id_hash: str, at: dt.datetime) -> None:
        await self._exec(sa.update(T.sessions).where(T.sessions.c.id_hash == id_hash).values(last_seen_at=at))

    async def delete_session(self, id_hash: str) -> None:
        await self._exec(sa.delete(T.sessions).where(T.sessions.c.id_hash == id_hash))

    async def delete_sessions(self, *, user_id: str, keep: str | None = None) -> None:
        stmt = sa.delete(T.sessions).where(T.sessions.c.user_id == user_id)
        if keep is not None:
            stmt = stmt.where(T.sessions.c.id_hash != keep)
        await self._exec(stmt)

    # invitations -------------------------------------------------------------------------------
    async def create_invitation(self, invitation: records.Invitation) -> None:
        values = _values(invitation, T.invitations)
        await self.database.run(lambda conn: conn.execute(sa.insert(T.invitations).values(values)), write=True)

    async def list_invitations(self) -> builtins.list[records.Invitation]:
        found = await self._rows(sa.select(T.invitations).order_by(T.invitations.c.created_at))
        return [records.Invitation(**{**dict(r), "role": roles.Role.parse(r["role"])}) for r in found]

    async def find_invitation(self, token_hash: str) -> records.Invitation | None:
        found = await self._rows(sa.select(T.invitations).where(T.invitations.c.token_hash == token_hash))
        return records.Invitation(**{**dict(found[0]), "role": roles.Role.parse(found[0]["role"])}) if found else None

    async def use_invitation(self, token_hash: str, *, by: str, now: dt.datetime) -> bool:
        """Mark it used, once: False when it is unknown, used already, or expired."""
        table = T.invitations
        return bool(await self._exec(
            sa.update(table).where(table.c.token_hash == token_hash, table.c.used_at.is_(None),
                                   table.c.expires_at > now).values(used_at=now, used_by=by)))

    async def delete_invitation(self, invitation_id: str) -> None:
        if not await self._exec(sa.delete(T.invitations).where(T.invitations.c.id == invitation_id)):
            raise errors.NotFoundError(f"invitation {invitation_id!r} not found")

    # join requests -----------------------------------------------------------------------------
    async def upsert_join_request(self, request: records.JoinRequest) -> records.JoinRequest:
        table = T.join_requests
        existing = await self._rows(sa.select(table).where(table.c.provider == request.provider,
                                                           table.c.subject == request.subject))
        if existing:
            return records.JoinRequest(**dict(existing[0]))
        values = _values(request, table)
        await self.database.run(lambda conn: conn.execute(sa.insert(table).values(values)), write=True)
        return request

    async def list_join_requests(self, *, state: str | None = None) -> builtins.list[records.JoinRequest]:
        query = sa.select(T.join_requests).order_by(T.join_requests.c.created_at)
        if state is not None:
            query = query.where(T.join_requests.c.state == state)
        return [records.JoinRequest(**dict(r)) for r in await self._rows(query)]

    async def get_join_request(self, request_id: str) -> records.JoinRequest:
        found = await self._rows(sa.select(T.join_requests).where(T.join_requests.c.id == request_id))
        if not found:
            raise errors.NotFoundError(f"join request {request_id!r} not found (GET /api/v1/join-requests)")
        return records.JoinRequest(**dict(found[0]))

    async def decide_join_request(self, request_id: str, *, state: str, by: str, now: dt.datetime) -> bool:
        table = T.join_requests
        return bool(await self._exec(sa.update(table).where(table.c.id == request_id, table.c.state == "pending")
                                     .values(state=state, decided_at=now, decided_by=by)))

    # OAuth states ------------------------------------------------------------------------------
    async def put_oauth_state(self, state: records.OAuthState) -> None:
        values = _values(state, T.oauth_states)
        await self.database.run(lambda conn: conn.execute(sa.insert(T.oauth_states).values(values)), write=True)

    async def take_oauth_state(self, state_hash: str, *, newer_than: dt.datetime) -> records.OAuthState | None:
        """Consume a state: it answers once, and only while fresh."""
        table = T.oauth_states

        def take(conn: sa.Connection) -> records.OAuthState | None:
            row = conn.execute(sa.select(table).where(table.c.state_hash == state_hash)).mappings().first()
            if row is None or not conn.execute(sa.delete(table).where(table.c.state_hash == state_hash)).rowcount:
                return None
            conn.execute(sa.delete(table).where(table.c.created_at < newer_than))
            return records.OAuthState(**dict(row)) if row["created_at"] >= newer_than else None

        return await self.database.run(take, write=True)

    # audit -------------------------------------------------------------------------------------
    async def append_audit(self, *, at: dt.datetime, actor: str, action: str, target: str, outcome: int,
                           ip: str, detail: dict[str, Any]) -> None:
        await self.audit_writer.append(audit_row(at=at, actor=actor, action=action, target=target, outcome=outcome,
                                                 ip=ip, detail=detail))

    async def list_audit(self, *, actor: str | None = None, action: str | None = None, target: str | None = None,
                         since: dt.datetime | None = None, until: dt.datetime | None = None,
                         before_id: int | None = None, limit: int = 100) -> builtins.list[records.AuditEntry]:
        table = T.audit_log
        query = sa.select(table).order_by(table.c.id.desc()).limit(limit)
        for column, value in ((table.c.actor, actor), (table.c.action, action)):
            if value is not None:
                query = query.where(column == value)
        if target is not None:
            query = query.where(table.c.target.startswith(target, autoescape=True))
        if since is not None:
            query = query.where(table.c.at >= since)
        if until is not None:
            query = query.where(table.c.at < until)
        if before_id is not None:
            query = query.where(table.c.id < before_id)
        return [records.AuditEntry(**dict(r)) for r in await self._rows(query)]
