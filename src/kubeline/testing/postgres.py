"""A throwaway PostgreSQL server for tests and benchmarks (one way to start it, shared by both).

``local_server()`` runs ``initdb`` into a temp dir (as the ``postgres`` user when run as root:
PostgreSQL refuses root), listens on 127.0.0.1 on a free port with its unix socket in the temp
dir, fsync off, and removes everything on the way out. ``from_env()`` is the server that
``KUBELINE_TEST_POSTGRES_URL`` (a superuser URL) names instead, or ``None``. ``Unavailable``
says why no server could be started (the integration tests turn it into a skip, or a failure
under ``KUBELINE_REQUIRE_POSTGRES=1``; a benchmark stops with the reason).
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import pathlib
import shutil
import socket
import subprocess
import tempfile
import uuid
from collections.abc import Callable, Iterator

ENV_URL = "KUBELINE_TEST_POSTGRES_URL"


class Unavailable(Exception):
    """No PostgreSQL server could be started here; the message says why."""


@dataclasses.dataclass(frozen=True)
class PostgresServer:
    host: str
    port: int
    user: str
    # ``pg_ctl -D DATA`` (with the command prefix that runs it as the server's user) and the start
    # options, when ``local_server`` started it: ``stop``/``start`` then work (outage tests)
    control: tuple[str, ...] = ()
    start_args: tuple[str, ...] = ()

    def stop(self) -> None:
        """Stop the server (``pg_ctl stop -m fast``: sessions are ended, nothing is lost)."""
        self._control("-m", "fast", "-w", "stop")

    def start(self) -> None:
        """Start it again on the same port and data."""
        self._control(*self.start_args, "-w", "-t", "60", "start")

    def _control(self, *args: str) -> None:
        if not self.control:
            raise Unavailable(f"the PostgreSQL server of {ENV_URL} was not started here: a test cannot stop "
                              "or start it (unset the variable to let the tests start their own)")
        done = subprocess.run([*self.control, *args], capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise Unavailable(f"pg_ctl {args[-1]} failed: {(done.stderr or done.stdout)[-500:]}")

    def url(self, database: str, *, driver: str = "postgresql+psycopg") -> str:
        return f"{driver}://{self.user}@{self.host}:{self.port}/{database}"

    def admin(self, sql: str) -> None:
        """Run one statement on the maintenance database, outside a transaction."""
        import psycopg

        with psycopg.connect(
            host=self.host, port=self.port, user=self.user, dbname="postgres", autocommit=True
        ) as conn:
            conn.execute(sql)

    @contextlib.contextmanager
    def database(self, *, prefix: str = "kubeline", template: str | None = None) -> Iterator[str]:
        """A new database (copied from ``template`` if given), dropped on the way out: its URL."""
        name = f"{prefix}_{uuid.uuid4().hex[:12]}"
        self.admin(f"CREATE DATABASE {name}" + (f" TEMPLATE {template}" if template else ""))
        try:
            yield self.url(name)
        finally:
            self.admin(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def from_env() -> PostgresServer | None:
    """The server ``KUBELINE_TEST_POSTGRES_URL`` names, if set."""
    external = os.environ.get(ENV_URL)
    if not external:
        return None
    import sqlalchemy as sa

    parsed = sa.make_url(external)
    return PostgresServer(host=parsed.host or "127.0.0.1", port=parsed.port or 5432, user=parsed.username or "")


@contextlib.contextmanager
def server() -> Iterator[PostgresServer]:
    """``from_env()`` when set, else a ``local_server()`` for the duration."""
    external = from_env()
    if external is not None:
        yield external
        return
    with local_server() as local:
        yield local


def _find_bin_dir() -> pathlib.Path | None:
    versions = [p for p in pathlib.Path("/usr/lib/postgresql").glob("*/bin") if p.parent.name.isdigit()]
    for path in sorted(versions, key=lambda p: int(p.parent.name), reverse=True):
        if all((path / tool).exists() for tool in ("initdb", "pg_ctl", "postgres")):
            return path
    found = shutil.which("initdb")
    return pathlib.Path(found).resolve().parent if found and shutil.which("pg_ctl") else None


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
        raise Unavailable("running as root and there is no 'postgres' user to run the server as") from None
    prefix = ["runuser", "-u", "postgres", "--"] if shutil.which("runuser") else [
        "setpriv", f"--reuid={entry.pw_uid}", f"--regid={entry.pw_gid}", "--clear-groups"
    ]
    return prefix, lambda path: os.chown(path, entry.pw_uid, entry.pw_gid)


@contextlib.contextmanager
def local_server(*, max_connections: int = 200) -> Iterator[PostgresServer]:
    """Start a PostgreSQL of Debian's packages (installed if missing, as root) for the duration."""
    from kubeline import testing

    bin_dir = _find_bin_dir()
    if bin_dir is None:
        problem = testing.apt_install("postgresql")
        bin_dir = _find_bin_dir()
        if bin_dir is None:
            raise Unavailable(problem or "postgresql installed but initdb/pg_ctl not found")
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
                   f"-c synchronous_commit=off -c full_page_writes=off -c max_connections={max_connections}")
        started = subprocess.run(
            [*prefix, str(bin_dir / "pg_ctl"), "-D", str(data), "-l", str(log), "-o", options,
             "-w", "-t", "60", "start"],
            capture_output=True, text=True, check=False,
        )
        if started.returncode != 0:
            tail = log.read_text()[-500:] if log.exists() else started.stderr
            raise Unavailable(f"pg_ctl start failed: {tail}")
        try:
            yield PostgresServer(host="127.0.0.1", port=port, user=user,
                                 control=(*prefix, str(bin_dir / "pg_ctl"), "-D", str(data)),
                                 start_args=("-l", str(log), "-o", options))
        finally:
            subprocess.run(
                [*prefix, str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop"],
                capture_output=True, check=False,
            )
    except subprocess.CalledProcessError as exc:
        raise Unavailable(f"{exc.cmd[len(prefix)]} failed: {exc.stderr[-500:]}") from None
    finally:
        shutil.rmtree(root, ignore_errors=True)
