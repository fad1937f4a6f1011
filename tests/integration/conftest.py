"""A real PostgreSQL for every integration test that asks for ``postgres_url`` / ``database_url``.

PostgreSQL (self-contained, so it can move to ``tests/conftest.py`` as is): the session starts
its own server (``initdb`` into a temp dir as an unprivileged user, listening on 127.0.0.1 on a
free port, unix socket in the temp dir), migrates a template database once, and gives each test
a fresh database copied from that template (fast, as procrastinate does).
``KUBELINE_TEST_POSTGRES_URL`` points at an existing server instead (a superuser URL;
databases are made and dropped there).
Without a server the PostgreSQL tests are skipped with the reason, unless
``KUBELINE_REQUIRE_POSTGRES=1``, which turns the skip into a failure.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import glob
import os
import pathlib
import shutil
import socket
import subprocess
import tempfile
import threading
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest

TEMPLATE_DB = "kubeline_template"


@dataclasses.dataclass(frozen=True)
class PostgresServer:
    host: str
    port: int
    user: str

    def url(self, database: str, *, driver: str = "postgresql+psycopg") -> str:
        return f"{driver}://{self.user}@{self.host}:{self.port}/{database}"

    def admin(self, sql: str) -> None:
        """Run one statement on the maintenance database, outside a transaction."""
        import psycopg

        with psycopg.connect(
            host=self.host, port=self.port, user=self.user, dbname="postgres", autocommit=True
        ) as conn:
            conn.execute(sql)


def _unavailable(reason: str) -> None:
    if os.environ.get("KUBELINE_REQUIRE_POSTGRES") == "1":
        pytest.fail(f"PostgreSQL required (KUBELINE_REQUIRE_POSTGRES=1) but unavailable: {reason}")
    pytest.skip(f"PostgreSQL unavailable: {reason}")


def _find_bin_dir() -> pathlib.Path | None:
    candidates = sorted(
        glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(p.split("/")[-2]), reverse=True
    )
    for path in candidates:
        if all(pathlib.Path(path, tool).exists() for tool in ("initdb", "pg_ctl", "postgres")):
            return pathlib.Path(path)
    found = shutil.which("initdb")
    return pathlib.Path(found).resolve().parent if found and shutil.which("pg_ctl") else None


def _install_postgres() -> str:
    from kubeline import testing

    return testing.apt_install("postgresql")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _as_postgres_user() -> tuple[list[str], Callable[[pathlib.Path], None]]:
    """Command prefix and a chown helper: PostgreSQL refuses to run as root."""
    if os.geteuid() != 0:
        return [], lambda _path: None
    import pwd

    try:
        entry = pwd.getpwnam("postgres")
    except KeyError:
        _unavailable("running as root and there is no 'postgres' user to run the server as")
        raise
    prefix = ["runuser", "-u", "postgres", "--"] if shutil.which("runuser") else [
        "setpriv", f"--reuid={entry.pw_uid}", f"--regid={entry.pw_gid}", "--clear-groups"
    ]
    return prefix, lambda path: os.chown(path, entry.pw_uid, entry.pw_gid)


@contextlib.contextmanager
def _local_server() -> Iterator[PostgresServer]:
    bin_dir = _find_bin_dir()
    if bin_dir is None:
        problem = _install_postgres()
        bin_dir = _find_bin_dir()
        if bin_dir is None:
            _unavailable(problem or "postgresql installed but initdb/pg_ctl not found")
    assert bin_dir is not None
    prefix, chown = _as_postgres_user()
    root = pathlib.Path(tempfile.mkdtemp(prefix="kubeline-pg-"))
    root.chmod(0o755)
    chown(root)
    data, sockets, log = root / "data", root / "sockets", root / "server.log"
    sockets.mkdir()
    chown(sockets)
    user = "kubeline"
    port = _free_port()
    try:
        subprocess.run(
            [*prefix, str(bin_dir / "initdb"), "-D", str(data), "-U", user, "--auth=trust",
             "-E", "UTF8", "--no-sync", "--no-instructions"],
            check=True, capture_output=True, text=True,
        )
        options = (f"-c listen_addresses=127.0.0.1 -p {port} -k {sockets} -c fsync=off "
                   "-c synchronous_commit=off -c full_page_writes=off -c max_connections=200")
        started = subprocess.run(
            [*prefix, str(bin_dir / "pg_ctl"), "-D", str(data), "-l", str(log), "-o", options,
             "-w", "-t", "60", "start"],
            capture_output=True, text=True, check=False,
        )
        if started.returncode != 0:
            tail = log.read_text()[-500:] if log.exists() else started.stderr
            _unavailable(f"pg_ctl start failed: {tail}")
        try:
            yield PostgresServer(host="127.0.0.1", port=port, user=user)
        finally:
            subprocess.run(
                [*prefix, str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop"],
                capture_output=True, check=False,
            )
    except subprocess.CalledProcessError as exc:
        _unavailable(f"{exc.cmd[len(prefix)]} failed: {exc.stderr[-500:]}")
    finally:
        shutil.rmtree(root, ignore_errors=True)


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

    external = os.environ.get("KUBELINE_TEST_POSTGRES_URL")
    with contextlib.ExitStack() as stack:
        if external:
            import sqlalchemy as sa

            parsed = sa.make_url(external)
            server = PostgresServer(
                host=parsed.host or "127.0.0.1", port=parsed.port or 5432, user=parsed.username or ""
            )
        else:
            server = stack.enter_context(_local_server())
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


