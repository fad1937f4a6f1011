"""A caller cancelled in the middle of a transaction (a driver whose lease renewal found the run
adopted elsewhere, a shutdown) leaves the database usable: the transaction ends as a whole
(committed or rolled back, never half), the caller sees ``CancelledError`` and no later
transaction fails with ``PendingRollbackError`` (it did on PostgreSQL, where a cancel reached the
connection halfway through a statement)."""

from __future__ import annotations

import asyncio
import random
from typing import Any

import pytest
import sqlalchemy as sa

from kubeline.storage.sql import engines

ROWS = sa.table("cancel_probe", sa.column("n", sa.Integer), sa.column("half", sa.Integer))


@pytest.mark.timeout(120)
async def test_cancelled_callers_leave_no_broken_connection_and_no_half_transaction(database_url: str) -> None:
    db = engines.open_database(database_url)
    sleep = "pg_sleep(:s)" if db.dialect == "postgresql" else ":s"
    try:
        await db.run(lambda conn: conn.execute(sa.text("CREATE TABLE cancel_probe (n INTEGER, half INTEGER)")),
                     write=True)

        def write(n: int) -> Any:
            def fn(conn: sa.Connection) -> None:
                conn.execute(sa.insert(ROWS).values(n=n, half=0))
                conn.execute(sa.text(f"SELECT {sleep}"), {"s": random.random() * 0.01})
                conn.execute(sa.insert(ROWS).values(n=n, half=1))
            return fn

        outcomes: list[BaseException | None] = []
        for round_ in range(15):
            tasks = [asyncio.ensure_future(db.run(write(round_ * 100 + i), write=True)) for i in range(12)]
            await asyncio.sleep(random.random() * 0.01)
            for task in tasks[::2]:
                task.cancel()
            outcomes += await asyncio.gather(*tasks, return_exceptions=True)
        unexpected = [repr(o) for o in outcomes if o is not None and not isinstance(o, asyncio.CancelledError)]
        assert unexpected == []
        if db.dialect == "postgresql":  # SQLite writes inline on the loop: done before any cancel lands
            assert any(isinstance(o, asyncio.CancelledError) for o in outcomes)
        halves = await db.run(lambda conn: conn.execute(
            sa.select(ROWS.c.n, sa.func.count()).group_by(ROWS.c.n)).all(), write=False)
        assert {count for _n, count in halves} == {2}  # each transaction whole or not at all
        # every task that was not cancelled committed; cancelled ones may have, too
        assert len(halves) >= sum(1 for o in outcomes if o is None)
        assert await db.run(lambda conn: conn.execute(sa.text("SELECT 1")).scalar(), write=False) == 1
    finally:
        await db.dispose()
