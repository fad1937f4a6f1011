"""Audit rows by group commit (``storage.sql.audit_rows``): concurrent requests' rows share an
INSERT on PostgreSQL, every caller returns once its own row is committed, and a row the database
refuses fails only its own caller."""

from __future__ import annotations

import asyncio
import datetime as dt
import re
from typing import Any

import pytest

from kubeline.domain import errors
from kubeline.storage.sql import SqlStore

AT = dt.datetime(2026, 12, 6, tzinfo=dt.UTC)


_AUDIT_INSERT = re.compile(r"^\s*INSERT INTO audit_log", re.IGNORECASE)


async def _append(store: Any, actor: str, target: str = "POST /api/v1/runs") -> None:
    await store.accounts.append_audit(at=AT, actor=actor, action="create_run", target=target, outcome=201,
                                      ip="127.0.0.1", detail={"n": actor})


async def test_concurrent_rows_are_all_committed_when_their_callers_return(store: Any,
                                                                           statements: Any) -> None:
    actors = [f"user-{i:02d}" for i in range(40)]
    await asyncio.gather(*(_append(store, a) for a in actors))
    found = await store.accounts.list_audit(limit=100)
    assert sorted(e.actor for e in found) == actors
    assert {e.actor: e.detail for e in found}["user-07"] == {"n": "user-07"}
    if store.database.dialect == "postgresql":  # SQLite writes each inline, before the next call starts
        assert statements.count(_AUDIT_INSERT) < len(actors)  # rows that queued behind an INSERT went in one


@pytest.mark.postgres
async def test_a_row_the_database_refuses_fails_only_its_caller(postgres_url: str) -> None:
    store = await SqlStore.open(postgres_url)  # PostgreSQL refuses a NUL byte in text (SQLite stores it)
    try:
        await _refused_row_fails_alone(store)
    finally:
        await store.close()


async def _refused_row_fails_alone(store: Any) -> None:
    outcomes = await asyncio.gather(*(_append(store, f"ok-{i}") for i in range(5)),
                                    _append(store, "bad", target="POST /a\x00b"),
                                    *(_append(store, f"ok-{i}") for i in range(5, 10)), return_exceptions=True)
    assert [type(o) for o in outcomes].count(errors.InvalidInputError) == 1
    assert isinstance(outcomes[5], errors.InvalidInputError)
    found = {e.actor for e in await store.accounts.list_audit(limit=100)}
    assert found == {f"ok-{i}" for i in range(10)}


async def test_a_cancelled_caller_does_not_strand_the_rows_behind_it(store: Any) -> None:
    first = asyncio.ensure_future(_append(store, "cancelled"))
    await asyncio.sleep(0)
    rest = [asyncio.ensure_future(_append(store, f"later-{i}")) for i in range(5)]
    first.cancel()
    await asyncio.wait_for(asyncio.gather(*rest), 30)
    assert {f"later-{i}" for i in range(5)} <= {e.actor for e in await store.accounts.list_audit(limit=100)}
