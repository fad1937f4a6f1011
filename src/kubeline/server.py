"""``kubeline server``: the API, the dispatcher and the scheduler in one process, by role.

Roles: ``all`` (the embedded default), ``api`` (HTTP only), ``worker`` (HTTP for probes and
metrics + ``engine.resume()`` and ``engine.serve()``), ``scheduler`` (HTTP + the scheduler loop
``kubeline.scheduler.ticker.run_forever``). Several processes of any role can share one
PostgreSQL: claims and schedule fires are made safe by the database.

Two listeners: the API on ``port``, and the attempt upload (``api.app.create_upload_app``) on
``settings.upload_port``, so stage pods can be let reach the upload and nothing else.

Shutdown (SIGTERM/SIGINT, or ``stop`` set): stop accepting connections, give open responses a
few seconds, stop dispatching, and leave running attempts running: the next start adopts them.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import logging
import signal
import socket
import sys
from collections.abc import Callable, Coroutine, Iterator
from typing import Any, Literal

import uvicorn

from kubeline import bootstrap
from kubeline import settings as settings_
from kubeline.api import access, services
from kubeline.api import app as app_
from kubeline.auth import addresses
from kubeline.ui import serve as ui_serve

log = logging.getLogger("kubeline.server")
Role = Literal["all", "api", "scheduler", "worker"]
ROLES: tuple[Role, ...] = ("all", "api", "scheduler", "worker")
GRACE_SECONDS = 3.0


class _Server(uvicorn.Server):
    """uvicorn without its own signal capture: ``serve`` below owns the signals (uvicorn's
    re-raises SIGTERM after shutdown, which would kill us before the dispatcher stops)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


INSECURE_BANNER = ("\n" + "!" * 78 + "\n!! AUTHENTICATION IS DISABLED (--insecure-no-auth): anyone who reaches "
                   "this server is an admin.\n!! Use it for local experiments only.\n" + "!" * 78 + "\n")


class InsecureBind(RuntimeError):
    """Auth is off and the address is not loopback-only."""


def check_bind(settings: settings_.Settings, host: str, *, insecure_no_auth: bool = False) -> None:
    """Refuse to serve without authentication on an address other machines can reach."""
    if (insecure_no_auth or not settings.auth_enabled) and not addresses.is_loopback(host):
        why = "--insecure-no-auth" if insecure_no_auth else "KUBELINE_AUTH_ENABLED=false"
        raise InsecureBind(
            f"refusing to listen on {host} with authentication disabled ({why}): listen on 127.0.0.1 "
            "(--host 127.0.0.1), or keep authentication on")


async def prepare_auth(kl: bootstrap.Kubeline) -> None:
    """First start: the admin (one-time password printed once, on stderr) and KUBELINE_ADMIN_TOKEN."""
    if not kl.settings.auth_enabled:
        sys.stderr.write(INSECURE_BANNER)
        log.warning("authentication is disabled: every caller is an admin")
        return
    password = await kl.auth.ensure_first_admin()
    await kl.auth.ensure_admin_token()
    if password:
        sys.stderr.write(f"\nFirst start: created user 'admin' with the one-time password\n\n    {password}\n\n"
                         "Log in with it (kubeline login, or the web UI); you will be asked to change it. "
                         "It is not shown again.\n\n")
        sys.stderr.flush()


def bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket for uvicorn.

    The protocol is named (``IPPROTO_TCP``, not 0) because asyncio sets ``TCP_NODELAY`` only on
    connections of sockets that say they are TCP: without it Nagle's algorithm holds a response's
    body until the client acknowledges its headers, and every answer on a kept-alive connection
    (a browser's) waited for the client's delayed ACK, ~40 ms.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(2048)
    sock.setblocking(False)
    return sock


async def serve(
    settings: settings_.Settings,
    *,
    host: str = "127.0.0.1",
    port: int = 8080,
    role: Role = "all",
    sock: socket.socket | None = None,
    upload_sock: socket.socket | None = None,
    started: Callable[[str], None] | None = None,
    stop: asyncio.Event | None = None,
    insecure_no_auth: bool = False,
    on_app: Callable[[Any], None] | None = None,
) -> None:
    """Run until a signal (main thread) or ``stop``; ``started(url)`` once connections are accepted;
    ``on_app(app)`` with the FastAPI app before that (tests read its routes)."""
    if role not in ROLES:
        raise ValueError(f"role {role!r} is not one of {', '.join(ROLES)}")
    stop = stop or asyncio.Event()
    if insecure_no_auth:
        settings = settings.model_copy(update={"auth_enabled": False})
    check_bind(settings, host if sock is None else sock.getsockname()[0], insecure_no_auth=insecure_no_auth)
    sock = sock or bind(host, port)
    upload_sock = upload_sock or bind(host, settings.upload_port)
    url, upload_url = url_of(sock), url_of(upload_sock)
    async with bootstrap.open_kubeline(settings, replica=True) as kl:
        await prepare_auth(kl)
        found = await services.reload_pipelines(kl)
        for problem in found.problems:
            log.warning("pipeline not loaded: %s", problem)
        app = app_.create_app(kl)
        ui_serve.mount(app, session_cookie=access.SESSION_COOKIE)
        if stale := ui_serve.stale_build():
            log.warning("%s", stale)
        if on_app is not None:
            on_app(app)
        server = _http(app)
        uploads = _http(app_.create_upload_app(kl))
        background = start_background(kl, role)
        bootstrap.settle_heap()
        with _signals_set(stop):
            watcher = asyncio.create_task(_exit_on(stop, server, uploads))
            announcer = asyncio.create_task(_announce(server, uploads, url=url, upload_url=upload_url, role=role,
                                                      started=started))
            try:
                await asyncio.gather(server.serve(sockets=[sock]), uploads.serve(sockets=[upload_sock]))
            finally:
                for task in (watcher, announcer):
                    task.cancel()
                log.info("stopping: no new runs are dispatched; running attempts are left to adopt")
                for task in background:
                    task.cancel()
                await asyncio.gather(*background, return_exceptions=True)
                await kl.engine.shutdown()
                sock.close()
                upload_sock.close()


def url_of(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"http://{'[' + host + ']' if ':' in host else host}:{port}"


def _http(app: Any) -> _Server:
    return _Server(uvicorn.Config(app, log_config=None, lifespan="off",
                                  timeout_graceful_shutdown=int(GRACE_SECONDS), access_log=False))


def start_background(kl: bootstrap.Kubeline, role: Role) -> list[asyncio.Task[Any]]:
    """The loops a process of ``role`` runs beside its API (``kubeline operator --dispatch`` is ``all``)."""
    tasks: list[asyncio.Task[Any]] = []
    if kl.git is not None:  # every role: each replica checks out the commit the database agreed on
        tasks.append(_task(kl.git.run_forever(), "git-sync"))
    if kl.notifier is not None and role in ("all", "scheduler", "worker"):  # idempotent across replicas
        tasks.append(_task(kl.notifier.run_forever(), "notifications"))
    if kl.cleanup is not None and role in ("all", "scheduler"):  # deletes re-check; replicas may overlap
        tasks.append(_task(kl.cleanup.run_forever(), "retention"))
    controller = bootstrap.pool_controller(kl) if role != "api" else None
    if controller is not None:  # one replica acts (a Lease): scales worker pools, writes their status
        tasks.append(_task(controller.run_forever(), "worker-pools"))
    if role in ("all", "worker"):
        tasks.append(_task(kl.engine.resume(), "resume"))
        tasks.append(_task(kl.engine.serve(), "dispatcher"))
    if role in ("all", "scheduler"):
        try:
            ticker = importlib.import_module("kubeline.scheduler.ticker")
        except ModuleNotFoundError as exc:
            if exc.name not in ("kubeline.scheduler", "kubeline.scheduler.ticker"):
                raise
            log.warning("no scheduler in this build (kubeline.scheduler.ticker missing): schedules will not fire")
        else:
            tasks.append(_task(ticker.run_forever(kl), "scheduler"))
    return tasks


def _task(coro: Coroutine[Any, Any, Any], name: str) -> asyncio.Task[Any]:
    task = asyncio.create_task(coro, name=name)

    def done(t: asyncio.Task[Any]) -> None:
        if not t.cancelled() and t.exception() is not None:
            log.error("%s stopped with an error", name, exc_info=t.exception())

    task.add_done_callback(done)
    return task


async def _exit_on(stop: asyncio.Event, *servers: uvicorn.Server) -> None:
    await stop.wait()
    for server in servers:
        server.should_exit = True


async def _announce(server: uvicorn.Server, uploads: uvicorn.Server, *, url: str, upload_url: str, role: Role,
                    started: Callable[[str], None] | None) -> None:
    while not (server.started and uploads.started):  # noqa: ASYNC110 - uvicorn has no "started" event
        await asyncio.sleep(0.01)
    log.info("kubeline server listening on %s (role %s); attempt uploads on %s", url, role, upload_url,
             extra={"url": url, "role": role, "upload_url": upload_url})
    if started is not None:
        started(url)


@contextlib.contextmanager
def _signals_set(stop: asyncio.Event) -> Iterator[None]:
    """SIGTERM/SIGINT set ``stop`` (main thread only; threads stop through ``stop`` itself)."""
    loop = asyncio.get_running_loop()
    installed = []
    for sig in (signal.SIGTERM, signal.SIGINT):
        try:
            loop.add_signal_handler(sig, stop.set)
            installed.append(sig)
        except (RuntimeError, ValueError):  # not the main thread
            break
    try:
        yield
    finally:
        for sig in installed:
            loop.remove_signal_handler(sig)
