"""Round trips per transaction on PostgreSQL (most of a transaction's cost there): a read runs
outside a transaction (no ``BEGIN``/``COMMIT``), and no connection is pinged before use, so a
connection the server dropped must be replaced by running the transaction again."""

from __future__ import annotations

import psycopg
import pytest
import sqlalchemy as sa

from kubeline.storage.sql import engines

pytestmark = pytest.mark.postgres


def _status(conn: sa.Connection) -> int:
    conn.execute(sa.text("SELECT 1"))
    dbapi = conn.connection.dbapi_connection
    assert dbapi is not None
    return int(dbapi.info.transaction_status)  # type: ignore[attr-defined]


async def test_a_read_opens_no_transaction_and_a_write_does(postgres_url: str) -> None:
    db = engines.open_database(postgres_url)
    try:
        assert await db.run(_status, write=False) == psycopg.pq.TransactionStatus.IDLE
        assert await db.run(_status, write=True) == psycopg.pq.TransactionStatus.INTRANS
        # the pool hands the read's connection to a write: that write is still one transaction
        await db.run(lambda conn: conn.execute(sa.text("CREATE TABLE probe (n INTEGER)")), write=True)

        def half_then_fail(conn: sa.Connection) -> None:
            conn.execute(sa.text("INSERT INTO probe VALUES (1)"))
            raise RuntimeError("rolled back")

        with pytest.raises(RuntimeError):
            await db.run(half_then_fail, write=True)
        assert await db.run(lambda conn: conn.execute(sa.text("SELECT count(*) FROM probe")).scalar(),
                            write=False) == 0
    finally:
        await db.dispose()


async def test_connections_the_server_dropped_are_replaced_without_an_error(postgres_url: str) -> None:
    db = engines.open_database(postgres_url)
    dsn = db.url.set(drivername="postgresql").render_as_string(hide_password=False)
    try:
        await db.run(lambda conn: conn.execute(sa.text("CREATE TABLE probe (n INTEGER)")), write=True)
        for write in (False, True):  # a read, then a write, each on a pool of dropped connections
            async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as admin:
                killed = await (await admin.execute(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                    "WHERE datname = current_database() AND pid <> pg_backend_pid()")).fetchone()
            assert killed is not None and killed[0] >= 1

            def use(conn: sa.Connection, write: bool = write) -> int:
                if write:
                    conn.execute(sa.text("INSERT INTO probe VALUES (1)"))
                return int(conn.execute(sa.text("SELECT count(*) FROM probe")).scalar_one())

            assert await db.run(use, write=write) == (1 if write else 0)
    finally:
        await db.dispose()
