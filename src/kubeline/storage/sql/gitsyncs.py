"""The ``git_syncs`` table: the commit each repository is served from, agreed by all replicas.

``propose`` is a compare-and-set: a replica that validated a new commit moves ``good_commit``
only if it still is the one that replica started from, so two replicas syncing at once never
flip-flop; the loser adopts the winner's commit.
"""

from __future__ import annotations

import builtins
import datetime as dt
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from kubeline.domain import repos
from kubeline.storage.sql import engines
from kubeline.storage.sql import tables as T


def _from_row(row: sa.RowMapping) -> repos.SyncState:
    return repos.SyncState(name=row["name"], url=row["url"], branch=row["branch"],
                           good_commit=row["good_commit"], seen_commit=row["seen_commit"], status=row["status"],
                           message=row["message"], problems=list(row["problems"] or []),
                           synced_at=row["synced_at"], updated_at=row["updated_at"])


class GitSyncs:
    def __init__(self, database: engines.Database) -> None:
        self.database = database

    async def get(self, name: str) -> repos.SyncState | None:
        def read(conn: sa.Connection) -> repos.SyncState | None:
            row = conn.execute(sa.select(T.git_syncs).where(T.git_syncs.c.name == name)).mappings().first()
            return _from_row(row) if row else None
        return await self.database.run(read, write=False)

    async def list(self) -> builtins.list[repos.SyncState]:
        def read(conn: sa.Connection) -> builtins.list[repos.SyncState]:
            return [_from_row(r) for r in conn.execute(sa.select(T.git_syncs).order_by(T.git_syncs.c.name)).mappings()]
        return await self.database.run(read, write=False)

    async def record(self, *, spec: repos.RepoSpec, status: str, message: str, seen_commit: str | None,
                     problems: builtins.list[str], propose: str | None = None,
                     based_on: str | None = None) -> repos.SyncState:
        """Record a sync's outcome; with ``propose``, move ``good_commit`` to it if it still is
        ``based_on`` (compare-and-set). Returns the row as it is after the write."""
        now = dt.datetime.now(dt.UTC)
        values: dict[str, Any] = {"url": spec.url, "branch": spec.branch, "status": status, "message": message,
                                  "seen_commit": seen_commit, "problems": problems, "updated_at": now}

        def write(conn: sa.Connection) -> repos.SyncState:
            table = T.git_syncs
            insert = (sqlite.insert(table) if self.database.dialect == "sqlite" else postgresql.insert(table))
            conn.execute(insert.values(name=spec.name, good_commit=None, synced_at=None, **values)
                         .on_conflict_do_nothing(index_elements=[table.c.name]))  # a replica made it first
            conn.execute(sa.update(table).where(table.c.name == spec.name).values(**values))
            if propose is not None:
                same = table.c.good_commit.is_(None) if based_on is None else table.c.good_commit == based_on
                conn.execute(sa.update(table).where(table.c.name == spec.name, same)
                             .values(good_commit=propose, synced_at=now))
            row = conn.execute(sa.select(table).where(table.c.name == spec.name)).mappings().one()
            return _from_row(row)
        return await self.database.run(write, write=True)
