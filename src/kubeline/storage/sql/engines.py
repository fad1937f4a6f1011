"""Databases per dialect: one way to run a transaction, tuned for SQLite and for PostgreSQL.

The store writes every transaction as a plain function of a SQLAlchemy ``Connection``;
``Database.run`` executes it in one transaction and awaits the result.

- PostgreSQL: an async engine (psycopg 3); the function runs through ``run_sync`` on it. Round
  trips are most of a transaction's cost there, so: a read (``write=False``) runs in autocommit,
  without the ``BEGIN`` and ``COMMIT`` round trips (under READ COMMITTED, PostgreSQL's default,
  each statement of a transaction takes its own snapshot anyway: a read of several statements
  sees nothing less consistent); and a pooled connection is not pinged before each use
  (``pool_pre_ping`` was one more round trip per transaction): a connection the server dropped
  fails its first statement, SQLAlchemy then invalidates the pool, and the transaction runs
  again on a new connection (below), while ``pool_recycle`` retires connections that idled long.
- SQLite: a sync pysqlite engine. A write to a file database first runs right on the calling
  (event loop) thread on a connection that never waits for a lock: the transaction is a few
  hundred microseconds of work, while a hop to another thread costs that again and, worse, makes
  the two threads fight over the GIL (every syscall of the loop then waits for the writer thread
  to let go: measured as a third of the engine's time per stage under a fan-out). When the
  database is locked (another process, or a write of this one in the writer thread), the
  ``BEGIN IMMEDIATE`` fails at once and the write goes to the writer thread instead, which waits
  for the lock up to ``busy_timeout``: the loop never blocks on a lock. Reads use reader threads;
  an in-memory database is one connection, used from the writer thread only. The whole
  transaction is one call either way, where ``aiosqlite`` would hop for every statement.
  Connections use WAL (readers never block the writer), ``synchronous=NORMAL`` (durable at
  checkpoints), foreign keys and a ``busy_timeout``; writes start with ``BEGIN IMMEDIATE`` so a
  read-check-write takes the database write lock before it reads, even against other processes.

Wake-ups: a transaction notes what it changed with ``notice(conn, channel, key)``; on PostgreSQL
the notes become one ``pg_notify`` statement at the end of the transaction (sent to every
listening process only if it commits), and after the commit ``wakeups.deliver`` wakes this
process's waiters (see ``storage.wakeups``).

PostgreSQL restarting (or unreachable for a moment): a transaction that fails because the
connection is gone or cannot be made is run again, with a backoff, for up to ``RECONNECT_WITHIN``
seconds, so a driver or the dispatcher pauses through a database restart instead of failing
runs or stopping (a transaction is a plain function of its connection: running it again is
safe, unless the connection dropped during the COMMIT itself, when the outcome is unknown; a
state change then fails its ``states.check`` on the retry and is reported).

``sqlite+aiosqlite://`` URLs are accepted and mean the same file. A cancelled caller does not
stop a SQLite transaction already handed to the thread: it completes (or fails) as a whole.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import itertools
import logging
import pathlib
import threading
from collections.abc import Callable
from typing import Any, Protocol, TypeVar

import sqlalchemy as sa
from sqlalchemy import event, pool
from sqlalchemy import exc as sa_exc
from sqlalchemy.ext import asyncio as sa_asyncio

from kubeline.domain import errors
from kubeline.storage import wakeups as wakeups_

log = logging.getLogger(__name__)
WRITE_OPTION = "kubeline_write"
RECONNECT_WITHIN = 60.0  # seconds a transaction is retried while PostgreSQL is unreachable
_RECONNECT_BACKOFF = (0.1, 0.2, 0.5, 1.0, 2.0)
# connection exceptions, admin/crash shutdown, "the database system is starting up"
_UNREACHABLE_STATES = ("08", "57P01", "57P02", "57P03")
BUSY_TIMEOUT_MS = 30_000
READER_THREADS = 4
POOL_SIZE = 20  # PostgreSQL connections kept open per process; more transactions at once wait for one
POOL_OVERFLOW = 0  # none opened beyond them (see AsyncDatabase)
POOL_RECYCLE = 1800  # seconds: connections older than this are replaced (idle-killing proxies, failovers)

_T = TypeVar("_T")
_NOTICES = "kubeline_notices"
_FINISH = "kubeline_finish"
Notices = list[tuple[wakeups_.Channel, str]]
_ASYNC_DRIVERS = {"postgresql": "postgresql+psycopg", "postgres": "postgresql+psycopg"}


def notice(conn: sa.Connection, channel: wakeups_.Channel, key: str = "") -> None:
    """Wake the waiters on ``channel`` (``key``) once this transaction commits."""
    conn.info.setdefault(_NOTICES, []).append((channel, key))


def finish_with(conn: sa.Connection, finish: Callable[[sa.Connection, Notices], None]) -> None:
    """End this (PostgreSQL) transaction with ``finish(conn, notices)`` instead of the ``pg_notify``
    statement: it sends the notices itself, in the same statement as its own last writes."""
    conn.info[_FINISH] = finish


def _with_notices(fn: Callable[[sa.Connection], _T]) -> Callable[[sa.Connection], tuple[_T, Notices]]:
    def run(conn: sa.Connection) -> tuple[_T, Notices]:
        # ``info`` taken once: after the connection dropped, reading it again raises
        # PendingRollbackError, which would hide the error that says the database is away
        info = conn.info
        info.pop(_NOTICES, None)  # ``info`` outlives a checkout: never inherit notes
        info.pop(_FINISH, None)
        try:
            result = fn(conn)
        finally:
            noted: Notices = info.pop(_NOTICES, [])
            finish: Callable[[sa.Connection, Notices], None] | None = info.pop(_FINISH, None)
        unique = list(dict.fromkeys(noted))
        if conn.dialect.name == "postgresql":
            if finish is not None:
                finish(conn, unique)
            elif unique:
                conn.execute(pg_notify(unique))
        return result, unique

    return run


# One statement text for any number of notices (two arrays): a VALUES list of the notices has no
# cache key, so SQLAlchemy compiled it again for every write transaction.
_PG_NOTIFY = sa.text("SELECT pg_notify(v.c, v.k) FROM unnest(CAST(:c AS text[]), CAST(:k AS text[])) AS v(c, k)")


def pg_notify(notices: Notices) -> sa.Executable:
    return _PG_NOTIFY.bindparams(c=[channel.value for channel, _ in notices], k=[key for _, key in notices])


class Database(Protocol):
    url: sa.URL
    dialect: str
    wakeups: wakeups_.Wakeups

    async def run(self, fn: Callable[[sa.Connection], _T], *, write: bool) -> _T:
        """Run ``fn`` in one transaction (committed when it returns, rolled back if it raises)."""
        ...

    def run_now(self, fn: Callable[[sa.Connection], _T]) -> _T:
        """``run(fn, write=True)`` at once, without a turn of the event loop, or ``WouldWait``
        (nothing done) when this database cannot."""
        ...

    async def dispose(self) -> None: ...


def normalise_url(url: str | sa.URL) -> sa.URL:
    """The URL with the driver Kubeline uses: pysqlite for SQLite, psycopg 3 for PostgreSQL."""
    parsed = sa.make_url(url)
    if parsed.get_backend_name() == "sqlite":
        return parsed.set(drivername="sqlite+pysqlite")
    if parsed.drivername in _ASYNC_DRIVERS:
        return parsed.set(drivername=_ASYNC_DRIVERS[parsed.drivername])
    return parsed


def is_memory(url: sa.URL) -> bool:
    return url.get_backend_name() == "sqlite" and url.database in (None, "", ":memory:")


def open_database(url: str | sa.URL) -> Database:
    parsed = normalise_url(url)
    if parsed.get_backend_name() == "sqlite":
        return SqliteDatabase(parsed)
    return AsyncDatabase(parsed)


class AsyncDatabase:
    """Any async-capable dialect (PostgreSQL): transactions through ``AsyncConnection.run_sync``."""

    def __init__(self, url: sa.URL, *, reconnect_within: float = RECONNECT_WITHIN) -> None:
        self.url = url
        self.reconnect_within = reconnect_within
        # No overflow: SQLAlchemy closes an overflow connection when it is returned, so under a
        # burst (64 drivers) every transaction past the pool's size opened a new PostgreSQL backend
        # (a fork, and every statement prepared again): 1.6 connections per no-op run with 20 + 20.
        # A transaction is a few milliseconds; waiting for a pooled connection costs less.
        self.engine = sa_asyncio.create_async_engine(url, pool_size=POOL_SIZE, max_overflow=POOL_OVERFLOW,
                                                     pool_recycle=POOL_RECYCLE)
        self.reads = self.engine.execution_options(isolation_level="AUTOCOMMIT")  # same pool
        self.dialect = self.engine.dialect.name
        self.wakeups = wakeups_.Wakeups()

    def run_now(self, fn: Callable[[sa.Connection], _T]) -> _T:
        raise WouldWait  # every transaction is a round trip to the server

    async def run(self, fn: Callable[[sa.Connection], _T], *, write: bool) -> _T:
        # A cancelled caller (a driver whose lease was taken over, a shutdown) must not interrupt
        # the transaction halfway: SQLAlchemy's connection is then left with a transaction it can
        # neither finish nor roll back, and the next use of it raises PendingRollbackError. The
        # transaction completes (commits or rolls back) as a whole, as on SQLite, and the caller
        # is cancelled once it has.
        abandoned = asyncio.Event()  # the caller was cancelled: no more retries
        transaction = asyncio.ensure_future(self._transaction(fn, write=write, abandoned=abandoned))
        cancelled = False
        while not transaction.done():
            try:
                await asyncio.wait([transaction])  # never cancels ``transaction`` itself
            except asyncio.CancelledError:
                cancelled = True  # each further cancel too: the transaction ends first
                abandoned.set()
        if cancelled:
            if not transaction.cancelled() and transaction.exception() is None:
                self.wakeups.deliver(transaction.result()[1])  # it committed
            raise asyncio.CancelledError
        result, notices = transaction.result()
        if notices:
            self.wakeups.deliver(notices)
        return result

    async def _transaction(self, fn: Callable[[sa.Connection], _T], *, write: bool,
                           abandoned: asyncio.Event) -> tuple[_T, Notices]:
        loop = asyncio.get_running_loop()
        give_up = loop.time() + self.reconnect_within
        for tries in itertools.count():
            try:
                if not write:
                    async with self.reads.connect() as conn:
                        return await conn.run_sync(_with_notices(fn))
                async with self.engine.begin() as conn:
                    return await conn.run_sync(_with_notices(fn))
            except sa_exc.DataError as exc:
                # Values PostgreSQL cannot hold (a NUL byte in text or JSON) are the caller's bad input.
                raise errors.InvalidInputError(f"the database refused a value: {exc.orig}") from None
            except (sa_exc.OperationalError, sa_exc.InterfaceError) as exc:
                delay = _RECONNECT_BACKOFF[min(tries, len(_RECONNECT_BACKOFF) - 1)]
                if not unreachable(exc) or abandoned.is_set() or loop.time() + delay > give_up:
                    raise
                log.warning("the database is unreachable (%s); trying the transaction again in %.1fs",
                            (str(exc.orig).strip() or type(exc.orig).__name__).splitlines()[0], delay)
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(delay):
                        await abandoned.wait()
        raise AssertionError("unreachable")  # pragma: no cover - itertools.count() never ends

    async def dispose(self) -> None:
        await self.engine.dispose()


def unreachable(exc: sa_exc.DBAPIError) -> bool:
    """Whether ``exc`` says the database could not be reached (connection refused, dropped, the
    server shutting down or starting up) rather than that it refused the statement."""
    if exc.connection_invalidated:
        return True
    state = getattr(exc.orig, "sqlstate", None)
    if state is None:  # no answer from a server at all
        return isinstance(exc, sa_exc.OperationalError)
    return str(state).startswith(_UNREACHABLE_STATES)


class SqliteDatabase:
    """SQLite through a sync engine on a writer thread (see the module docstring for why)."""

    dialect = "sqlite"

    def __init__(self, url: sa.URL) -> None:
        self.url = url
        self.wakeups = wakeups_.Wakeups()
        memory = is_memory(url)
        options: dict[str, Any] = {}
        if memory:
            options.update(poolclass=pool.StaticPool, connect_args={"check_same_thread": False})
        elif url.database:
            pathlib.Path(url.database).expanduser().parent.mkdir(parents=True, exist_ok=True)
        self.engine = sa.create_engine(url, **options)
        _configure_sqlite(self.engine, wal=not memory, busy_timeout_ms=BUSY_TIMEOUT_MS)
        # Writes on the loop thread: one connection that fails at once on a lock (see above).
        self._inline: sa.Engine | None = None
        # The loop thread's connection of it, kept between writes: a checkout and return per
        # transaction (the pool's reset, the options) were half of an empty transaction's cost.
        self._held = threading.local()
        if not memory:
            self._inline = sa.create_engine(url, poolclass=pool.SingletonThreadPool, pool_size=1)
            _configure_sqlite(self._inline, wal=True, busy_timeout_ms=0)
        self._writer = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="kubeline-db-w")
        # An in-memory database is one shared connection: everything goes through the writer.
        self._reader = self._writer if memory else concurrent.futures.ThreadPoolExecutor(
            READER_THREADS, thread_name_prefix="kubeline-db-r"
        )

    async def run(self, fn: Callable[[sa.Connection], _T], *, write: bool) -> _T:
        if write:
            with contextlib.suppress(WouldWait):  # else off the loop (another writer holds the lock)
                return self.run_now(fn)
        loop = asyncio.get_running_loop()
        executor = self._writer if write else self._reader
        result, notices = await loop.run_in_executor(executor, self._transaction, _with_notices(fn), write)
        if notices:
            self.wakeups.deliver(notices)
        return result

    def run_now(self, fn: Callable[[sa.Connection], _T]) -> _T:
        """``run(fn, write=True)`` at once on this (the loop's) thread, without a turn of the
        loop; ``WouldWait`` (nothing done) when it cannot: another writer holds the lock, or
        there is no inline connection (an in-memory database)."""
        if self._inline is None:
            raise WouldWait
        try:
            result, notices = self._inline_transaction(_with_notices(fn))
        except _Locked:
            raise WouldWait from None
        if notices:
            self.wakeups.deliver(notices)
        return result

    def _inline_transaction(self, fn: Callable[[sa.Connection], _T]) -> _T:
        assert self._inline is not None
        conn: sa.Connection | None = getattr(self._held, "conn", None)
        try:  # connecting (pragmas) and BEGIN IMMEDIATE are all that may find a lock
            if conn is None:
                conn = self._inline.connect()
                conn.execution_options(**{WRITE_OPTION: True})
                self._held.conn = conn
            transaction = conn.begin()
        except sa_exc.OperationalError as exc:
            self._drop_held()
            if _is_locked(exc):
                raise _Locked from None
            raise
        try:
            with transaction:
                return fn(conn)
        except BaseException:
            self._drop_held()  # whatever the error left on it: the next write connects anew
            raise

    def _drop_held(self) -> None:
        conn, self._held.conn = getattr(self._held, "conn", None), None
        if conn is not None:
            with contextlib.suppress(Exception):
                conn.close()

    def _transaction(self, fn: Callable[[sa.Connection], _T], write: bool) -> _T:
        with self.engine.connect() as conn:
            if write:
                conn.execution_options(**{WRITE_OPTION: True})
            with conn.begin():
                return fn(conn)

    async def dispose(self) -> None:
        loop = asyncio.get_running_loop()
        if self._inline is not None:
            self._drop_held()  # the loop thread's (dispose runs on the loop)
            self._inline.dispose()
        await loop.run_in_executor(self._writer, self.engine.dispose)
        self._writer.shutdown(wait=True)
        if self._reader is not self._writer:
            self._reader.shutdown(wait=True)


class WouldWait(Exception):
    """``run_now`` cannot write at once: the caller writes the usual way (``run``)."""


class _Locked(Exception):
    """The inline connection found the database locked before it did anything."""


def _is_locked(exc: sa_exc.OperationalError) -> bool:
    text = str(exc.orig).lower()
    return "database is locked" in text or "database table is locked" in text


def _configure_sqlite(engine: sa.Engine, *, wal: bool, busy_timeout_ms: int) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # we emit BEGIN ourselves
        cursor = dbapi_connection.cursor()
        if wal:
            cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(f"PRAGMA busy_timeout={busy_timeout_ms}")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: sa.Connection) -> None:
        write = connection.get_execution_options().get(WRITE_OPTION, False)
        connection.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")
