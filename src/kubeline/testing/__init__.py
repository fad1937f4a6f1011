"""Helpers for tests of code that talks to a Kubeline server: a real server on 127.0.0.1.

``ServerThread`` runs ``kubeline.server.serve`` in a thread with its own event loop (fast to
start; shares the process). ``ServerProcess`` runs ``kubeline server`` as a child process (for
memory measurements, signals and ``kill -9``). Both pick a free port and give ``url``.

Authentication stays on: each server gets an admin service token (``KUBELINE_ADMIN_TOKEN``,
random unless the settings bring one) in ``token``; ``client()`` and ``http()`` send it, and
``headers`` is ``{"Authorization": "Bearer ..."}`` for any other HTTP client. ``login_as``
makes a user with a role (and grants) and gives their personal token.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import pathlib
import secrets
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import httpx
import pydantic

from kubeline import client as client_
from kubeline import server as server_
from kubeline import settings as settings_


def with_admin_token(settings: settings_.Settings) -> settings_.Settings:
    """These settings with an admin service token (a random one unless they have one)."""
    if settings.admin_token is not None:
        return settings
    return settings.model_copy(update={"admin_token": pydantic.SecretStr(secrets.token_urlsafe(32))})


class _Authenticated:
    url: str
    token: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}

    def client(self, *, token: str | None = None, **kwargs: Any) -> client_.Client:
        """A ``kubeline.client.Client`` for this server, as the admin (or with ``token``)."""
        return client_.Client(self.url, token=token or self.token or None, **kwargs)

    def http(self, *, token: str | None = None, **kwargs: Any) -> httpx.Client:
        """An ``httpx.Client`` on this server's URL, as the admin (or with ``token``)."""
        headers = {"Authorization": f"Bearer {token or self.token}"} if (token or self.token) else {}
        return httpx.Client(base_url=self.url, headers=headers, **kwargs)

    def login_as(self, username: str, role: str, *, grants: list[dict[str, str]] | None = None,
                 pipelines: list[str] | None = None, password: str | None = None) -> str:
        """Create user ``username`` with ``role`` (and grants) through the API, log in as them with
        their password and make a personal token (limited to ``pipelines`` when given): its secret."""
        password = password or secrets.token_urlsafe(16)
        with self.http() as admin:
            admin.post("/api/v1/users", json={"username": username, "role": role, "password": password,
                                              "grants": grants or []}).raise_for_status()
        with httpx.Client(base_url=self.url) as browser:
            me = browser.post("/api/v1/auth/login", json={"username": username, "password": password})
            me.raise_for_status()
            made = browser.post("/api/v1/tokens", headers={"X-CSRF-Token": me.json()["csrf_token"]},
                                json={"name": f"{username} test token", "role": role, "pipelines": pipelines})
            made.raise_for_status()
            secret: str = made.json()["secret"]
            return secret


class ServerThread(_Authenticated):
    def __init__(self, settings: settings_.Settings, *, role: server_.Role = "all",
                 host: str = "127.0.0.1", start_timeout: float = 30.0) -> None:
        settings = with_admin_token(settings) if settings.auth_enabled else settings
        self.token = settings.admin_token.get_secret_value() if settings.admin_token else ""
        self.settings = settings
        self.role = role
        self.host = host
        self.start_timeout = start_timeout
        self.url = ""
        self.upload_url = ""  # the attempt-upload listener (what pods are given)
        self.app: Any = None  # the FastAPI app, once started
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._main, name="kubeline-server", daemon=True)

    def __enter__(self) -> ServerThread:
        self._thread.start()
        if not self._ready.wait(self.start_timeout):
            raise TimeoutError(f"the test server did not start within {self.start_timeout}s")
        if self._error is not None:
            raise RuntimeError("the test server failed to start") from self._error
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self, timeout: float = 30.0) -> None:
        if self._loop is not None and self._stop is not None and self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(timeout)
        if self._thread.is_alive():
            raise TimeoutError("the test server did not stop")

    def _main(self) -> None:
        async def main() -> None:
            self._loop = asyncio.get_running_loop()
            self._stop = asyncio.Event()

            def started(url: str) -> None:
                self.url = url
                self._ready.set()

            upload_sock = server_.bind(self.host, 0)
            self.upload_url = server_.url_of(upload_sock)

            def keep(app: Any) -> None:
                self.app = app

            await server_.serve(self.settings, host=self.host, port=0, role=self.role, upload_sock=upload_sock,
                                started=started, stop=self._stop, on_app=keep)

        try:
            asyncio.run(main())
        except BaseException as exc:
            self._error = exc
        finally:
            self._ready.set()


def stop_processes(processes: Sequence[subprocess.Popen[Any]], *, sig: int = signal.SIGTERM,
                   timeout: float = 30.0) -> None:
    """Signal every live process at once (they stop in parallel), then wait for each; one still
    running after ``timeout`` is killed."""
    for process in processes:
        if process.poll() is None:
            process.send_signal(sig)
    for process in processes:
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


class ServerProcess(_Authenticated):
    """``kubeline server`` in a child process; ``env`` adds KUBELINE_* settings."""

    def __init__(self, *, env: Mapping[str, str], role: server_.Role = "all", port: int | None = None,
                 log_file: pathlib.Path | None = None, start_timeout: float = 60.0) -> None:
        self.env = {**os.environ, **env}
        self.env.setdefault("KUBELINE_ADMIN_TOKEN", secrets.token_urlsafe(32))
        self.token = self.env["KUBELINE_ADMIN_TOKEN"]
        self.role = role
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.upload_port = free_port()
        self.upload_url = f"http://127.0.0.1:{self.upload_port}"
        self.log_file = log_file
        self.start_timeout = start_timeout
        self.process: subprocess.Popen[bytes] | None = None
        self._log: Any = None

    def __enter__(self) -> ServerProcess:
        self._log = self.log_file.open("ab") if self.log_file else subprocess.DEVNULL
        self.process = subprocess.Popen(
            [sys.executable, "-c", "from kubeline.cli.main import app; app()", "server",
             "--port", str(self.port), "--upload-port", str(self.upload_port), "--role", self.role],
            env=self.env, stdout=self._log, stderr=self._log, start_new_session=True)
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"kubeline server exited with {self.process.returncode} at start"
                                   + (f"; see {self.log_file}" if self.log_file else ""))
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(self.url + "/healthz", timeout=1).status_code == 200:
                    return self
            time.sleep(0.05)
        self.stop()
        raise TimeoutError(f"kubeline server did not answer on {self.url} within {self.start_timeout}s")

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int | None:
        if self.process is None:
            return None
        stop_processes([self.process], sig=sig, timeout=timeout)
        if self._log not in (None, subprocess.DEVNULL):
            self._log.close()
        return self.process.returncode

    def rss_bytes(self) -> int:
        """Resident memory of the server process (Linux /proc)."""
        for line in pathlib.Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        raise RuntimeError("VmRSS not found")


def free_port() -> int:
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextlib.contextmanager
def server_thread(settings: settings_.Settings, **kwargs: Any) -> Iterator[ServerThread]:
    with ServerThread(settings, **kwargs) as running:
        yield running


def apt_install(package: str) -> str:
    """Install a Debian package for a test's real component (as root); '' when it worked, else why not.

    ``apt-get update`` runs only when the first install fails, so a warm machine stays fast.
    """
    import shutil

    if os.geteuid() != 0 or not shutil.which("apt-get"):
        return f"cannot apt-get install {package} (not root or no apt-get)"
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "install", "-y", "-q", package]
    if subprocess.run(install, env=env, capture_output=True, check=False).returncode == 0:
        return ""
    subprocess.run(["apt-get", "update", "-q"], env=env, capture_output=True, check=False)
    result = subprocess.run(install, env=env, capture_output=True, text=True, check=False)
    return "" if result.returncode == 0 else f"apt-get install {package}: {result.stderr[-300:]}"


@contextlib.contextmanager
def http_server(handler: type[Any], **fresh: Any) -> Iterator[tuple[str, type[Any]]]:
    """A threaded HTTP server on 127.0.0.1 with a subclass of ``handler`` whose class attributes
    ``fresh`` (e.g. a list of requests seen) are new for this server; (its URL, that subclass)."""
    import http.server

    served = type("Handler", (handler,), dict(fresh))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), served)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}", served
    finally:
        httpd.shutdown()
        httpd.server_close()



async def admin_headers(kl: Any, *, role: str = "admin", pipelines: list[str] | None = None) -> dict[str, str]:
    """``Authorization`` headers of a new service token of an open ``Kubeline`` (for an app served
    in-process, e.g. through ``httpx.ASGITransport``)."""
    from kubeline.auth import roles

    _, secret = await kl.auth.create_token(name=f"test {role} token", role=roles.Role.parse(role), kind="service",
                                           user_id=None, created_by="kubeline.testing", scope=pipelines)
    return {"Authorization": f"Bearer {secret}"}
