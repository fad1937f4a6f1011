"""Audit rows written by group commit: one INSERT for every row that arrived while the previous
INSERT was in flight.

Every call that changes state writes one audit row after its answer (``api.security``). On
PostgreSQL a transaction of its own per row was three round trips (``BEGIN``, ``INSERT``,
``COMMIT``) per request, paid again under load by every concurrent request. Here the first caller
writes (in a task of its own); callers arriving meanwhile queue their rows and wait; when the
write ends, the rows that queued go together in the next one. Each caller still returns only once
its row is committed (or with the error that stopped it), as with a transaction per row: nothing
is buffered beyond the call. On SQLite a write completes without yielding to the loop, so rows rarely queue.
"""

from __future__ import annotations

import asyncio
import functools
from typing import Any

import sqlalchemy as sa

from kubeline.storage.sql import engines
from kubeline.storage.sql import tables as T

_INSERT = sa.insert(T.audit_log)


class AuditWriter:
    def __init__(self, database: engines.Database) -> None:
        self.database = database
        self._pending: list[tuple[dict[str, Any], asyncio.Future[None]]] = []
        self._drain: asyncio.Future[None] | None = None

    async def append(self, row: dict[str, Any]) -> None:
        """Insert ``row``; returns once it is committed (raises what stopped its INSERT)."""
        mine: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending.append((row, mine))
        if self._drain is None or self._drain.done():
            # its own task: a caller cancelled while its batch is written cannot strand the rows queued behind it
            self._drain = asyncio.ensure_future(self._write_pending())
        await mine

    async def _write_pending(self) -> None:
        while self._pending:
            batch, self._pending = self._pending, []
            rows = [row for row, _ in batch]
            try:
                await self.database.run(functools.partial(_insert, rows=rows), write=True)
            except asyncio.CancelledError:
                _settle(batch, error=RuntimeError("the audit write was interrupted (the server is stopping)"))
                _settle(self._pending, error=RuntimeError("the audit write was interrupted (the server is stopping)"))
                raise
            except Exception as exc:
                if len(batch) == 1:
                    _settle(batch, error=exc)
                else:  # one bad row (a value the database refuses) must not cost the others theirs
                    for entry in batch:
                        await self._write_one(entry)
            else:
                _settle(batch, error=None)

    async def _write_one(self, entry: tuple[dict[str, Any], asyncio.Future[None]]) -> None:
        try:
            await self.database.run(functools.partial(_insert, rows=[entry[0]]), write=True)
        except Exception as exc:
            _settle([entry], error=exc)
        else:
            _settle([entry], error=None)


def _insert(conn: sa.Connection, *, rows: list[dict[str, Any]]) -> None:
    conn.execute(_INSERT, rows)


def _settle(batch: list[tuple[dict[str, Any], asyncio.Future[None]]], *, error: BaseException | None) -> None:
    for _, future in batch:
        if future.done():  # its caller was cancelled: the row was written (or not) all the same
            continue
        if error is None:
            future.set_result(None)
        else:
            future.set_exception(error)
