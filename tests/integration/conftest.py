"""A real PostgreSQL for every integration test that asks for ``postgres_url`` / ``database_url``.

The session starts its own server (``kubeline.testing.postgres.local_server``, shared with the
benchmarks: ``initdb`` into a temp dir as an unprivileged user, 127.0.0.1 on a free port, fsync
off), migrates a template database once, and gives each test a fresh database copied from that
template (fast, as procrastinate does). ``KUBELINE_TEST_POSTGRES_URL`` points at an existing
server instead (a superuser URL; databases are made and dropped there).
Without a server the PostgreSQL tests are skipped with the reason, unless
``KUBELINE_REQUIRE_POSTGRES=1``, which turns the skip into a failure.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import pathlib
import re
import threading
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import sqlalchemy as sa

from kubeline.testing import postgres

TEMPLATE_DB = "kubeline_template"
PostgresServer = postgres.PostgresServer


def _unavailable(reason: str) -> None:
    if os.environ.get("KUBELINE_REQUIRE_POSTGRES") == "1":
        pytest.fail(f"PostgreSQL required (KUBELINE_REQUIRE_POSTGRES=1) but unavailable: {reason}")
    pytest.skip(f"PostgreSQL unavailable: {reason}")


def _run_in_thread(fn: Callable[[], Any]) -> None:
    """Run async setup from a sync fixture without touching the test's event loop."""
    errors: list[BaseException] = []

    def target() -> None:
        try:
            fn()
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=target)
    thread.start()
    thread.join()
    if errors:
        raise errors[0]


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """A PostgreSQL server for the session, with a template database migrated to head."""
    pytest.importorskip("psycopg")
    from kubeline.storage.sql import migrate

    with contextlib.ExitStack() as stack:
        try:
            server = stack.enter_context(postgres.server())
        except postgres.Unavailable as exc:
            _unavailable(str(exc))
            raise
        server.admin(f"DROP DATABASE IF EXISTS {TEMPLATE_DB}")
        server.admin(f"CREATE DATABASE {TEMPLATE_DB}")
        _run_in_thread(lambda: asyncio.run(migrate.upgrade(server.url(TEMPLATE_DB))))
        yield server
        server.admin(f"DROP DATABASE IF EXISTS {TEMPLATE_DB}")


@pytest.fixture
def postgres_url(postgres_server: PostgresServer) -> Iterator[str]:
    """A fresh database copied from the migrated template, dropped after the test."""
    name = f"kubeline_{uuid.uuid4().hex[:12]}"
    postgres_server.admin(f"CREATE DATABASE {name} TEMPLATE {TEMPLATE_DB}")
    yield postgres_server.url(name)
    postgres_server.admin(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@pytest.fixture
def empty_postgres_url(postgres_server: PostgresServer) -> Iterator[str]:
    """A fresh, never-migrated database (for migration tests)."""
    name = f"kubeline_empty_{uuid.uuid4().hex[:12]}"
    postgres_server.admin(f"CREATE DATABASE {name}")
    yield postgres_server.url(name)
    postgres_server.admin(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


# database fixtures ----------------------------------------------------------------------------
SQL_BACKENDS = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]


@pytest.fixture(params=SQL_BACKENDS)
def database_url(request: pytest.FixtureRequest, tmp_path: pathlib.Path) -> str:
    """A migrated database URL for the parametrised SQL backend."""
    if request.param == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path / 'kubeline.db'}"
    url: str = request.getfixturevalue("postgres_url")
    return url


class Statements:
    """Every SQL statement any engine of this process runs while active (a server may be a thread)."""

    def __init__(self) -> None:
        self.seen: list[str] = []
        self.lock = threading.Lock()

    def __call__(self, conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        with self.lock:
            self.seen.append(statement)

    def clear(self) -> None:
        with self.lock:
            self.seen.clear()

    def matching(self, pattern: re.Pattern[str]) -> list[str]:
        with self.lock:
            return [s for s in self.seen if pattern.search(s)]

    def count(self, pattern: re.Pattern[str]) -> int:
        return len(self.matching(pattern))


@pytest.fixture
def statements() -> Iterator[Statements]:
    """The SQL statements run while the test runs (``Statements``)."""
    seen = Statements()
    sa.event.listen(sa.engine.Engine, "before_cursor_execute", seen)
    try:
        yield seen
    finally:
        sa.event.remove(sa.engine.Engine, "before_cursor_execute", seen)
