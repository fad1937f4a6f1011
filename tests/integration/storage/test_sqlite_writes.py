"""SQLite writes: inline on the loop while the database is free, never blocking it on a lock.

The lock is held by another process (a real ``sqlite3`` client in a subprocess), the case of a
second Kubeline process (``kubeline cancel``, a second server) writing the same file.
"""

from __future__ import annotations

import asyncio
import pathlib
import subprocess
import sys
import threading
import time
from collections.abc import Callable

import pytest
import sqlalchemy as sa

from kubeline.storage.sql import engines

HOLD_LOCK = """
import sqlite3, sys, time
conn = sqlite3.connect(sys.argv[1], isolation_level=None)
conn.execute("BEGIN IMMEDIATE")
conn.execute("INSERT INTO t VALUES ('other process')")
print("locked", flush=True)
sys.stdin.readline()
conn.execute("COMMIT")
"""


async def _database(path: pathlib.Path) -> engines.Database:
    db = engines.open_database(f"sqlite:///{path}")
    await db.run(lambda conn: conn.exec_driver_sql("CREATE TABLE t (v TEXT)"), write=True)
    return db


def _insert(value: str) -> Callable[[sa.Connection], str]:
    def fn(conn: sa.Connection) -> str:
        conn.exec_driver_sql("INSERT INTO t VALUES (?)", (value,))
        return threading.current_thread().name

    return fn


async def test_a_free_database_is_written_on_the_loop_thread(tmp_path: pathlib.Path) -> None:
    db = await _database(tmp_path / "k.db")
    try:
        thread = await db.run(_insert("a"), write=True)
        assert thread == threading.current_thread().name
        rows = await db.run(lambda conn: conn.exec_driver_sql("SELECT v FROM t").all(), write=False)
        assert [r[0] for r in rows] == ["a"]
    finally:
        await db.dispose()


async def test_a_locked_database_is_waited_for_off_the_loop(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "k.db"
    db = await _database(path)
    argv = [sys.executable, "-c", HOLD_LOCK, str(path)]
    # A lock holder outside this loop, on purpose.
    with subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True) as holder:  # noqa: ASYNC220
        try:
            await _write_while_locked(db, holder)
        finally:
            holder.kill()
            await db.dispose()


async def _write_while_locked(db: engines.Database, holder: subprocess.Popen[str]) -> None:
    assert holder.stdout is not None and holder.stdin is not None
    assert holder.stdout.readline().strip() == "locked"
    write = asyncio.ensure_future(db.run(_insert("ours"), write=True))
    # The loop keeps turning while the write waits for the other process's lock.
    ticks, until = 0, time.monotonic() + 0.5
    while time.monotonic() < until:
        await asyncio.sleep(0.01)
        ticks += 1
    assert not write.done(), "the write went through while another process held the lock"
    assert ticks >= 10, f"the event loop was blocked ({ticks} ticks in 0.5 s)"
    holder.stdin.write("\n")
    holder.stdin.flush()
    thread = await asyncio.wait_for(write, 30)
    assert thread != threading.current_thread().name  # the writer thread waited for it
    rows = await db.run(lambda conn: conn.exec_driver_sql("SELECT v FROM t ORDER BY rowid").all(),
                        write=False)
    assert [r[0] for r in rows] == ["other process", "ours"]  # nothing lost, in lock order


async def test_a_failing_inline_write_rolls_back_and_raises(tmp_path: pathlib.Path) -> None:
    db = await _database(tmp_path / "k.db")

    def half_then_fail(conn: sa.Connection) -> None:
        conn.exec_driver_sql("INSERT INTO t VALUES ('half')")
        raise RuntimeError("broken transaction")

    try:
        try:
            await db.run(half_then_fail, write=True)
        except RuntimeError as exc:
            assert "broken transaction" in str(exc)
        else:
            raise AssertionError("the error was swallowed")
        await db.run(_insert("after"), write=True)
        rows = await db.run(lambda conn: conn.exec_driver_sql("SELECT v FROM t").all(), write=False)
        assert [r[0] for r in rows] == ["after"]
    finally:
        await db.dispose()


async def test_inline_writes_keep_one_connection_until_one_fails(tmp_path: pathlib.Path) -> None:
    """The loop thread's connection is held between inline writes (no checkout and return per
    transaction); a write that fails drops it, and the next one connects anew and works."""
    db = await _database(tmp_path / "k.db")

    def connection_of(conn: sa.Connection) -> sa.Connection:
        conn.exec_driver_sql("INSERT INTO t VALUES ('x')")
        return conn  # held here: its identity cannot be reused

    def fail(conn: sa.Connection) -> None:
        raise RuntimeError("broken transaction")

    try:
        first, second = [await db.run(connection_of, write=True) for _ in range(2)]
        assert first is second
        with pytest.raises(RuntimeError, match="broken transaction"):
            await db.run(fail, write=True)
        third = await db.run(connection_of, write=True)
        rows = await db.run(lambda conn: conn.exec_driver_sql("SELECT count(*) FROM t").scalar(), write=False)
        assert rows == 3
        assert third is not first  # the failed write's connection was dropped (back to the pool)
        assert first.closed
    finally:
        await db.dispose()
