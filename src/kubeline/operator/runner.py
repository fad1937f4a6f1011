"""Run the operator: alone (``kubeline operator``) or with the server in one process (``--dispatch``).

Every replica serves HTTP (the API app: ``/healthz``, ``/readyz``, ``/metrics``, ``/api/v1``);
with ``dispatch`` it also drives runs and fires schedules, exactly like ``kubeline server``. Only
the replica that holds the Lease (``operator.leader``) runs kopf; it stops kopf as soon as it
cannot renew, and starts it again once it holds the Lease again, so an API server that is away
for a while is survived without a restart (and without a crash loop).

kopf installs its own SIGTERM/SIGINT handlers when it starts; ours are put back right after, so a
signal always means "stop this process" (kopf is then stopped through its stop flag).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
from collections.abc import Callable, Coroutine, Iterator
from typing import Any

import prometheus_client
import uvicorn

from kubeline import bootstrap, k8s, metrics, server
from kubeline import settings as settings_
from kubeline.api import app as app_
from kubeline.api import services
from kubeline.operator import leader as leader_
from kubeline.operator import reconcile

log = logging.getLogger("kubeline.operator")
LEASE_NAME = "kubeline-operator"
IS_LEADER = prometheus_client.Gauge(
    "kubeline_operator_leader", "1 while this process is the acting operator replica.",
    registry=metrics.METRICS.registry)
KOPF_STARTS = prometheus_client.Counter(
    "kubeline_operator_starts_total", "Times this process started acting as the operator.",
    registry=metrics.METRICS.registry)


def identity() -> str:
    return f"{socket.gethostname()}-{os.getpid()}-{os.urandom(3).hex()}"


async def run_operator(ctx: reconcile.Context, *, namespaces: list[str] | None,
                       election: leader_.LeaderElection | None, stop: asyncio.Event,
                       on_signals: Callable[[], None] = lambda: None) -> None:
    """Act (kopf) while leader, until ``stop``; usable inside any process that has a Kubeline."""
    import kopf

    from kubeline.operator import handlers

    while not stop.is_set():
        if election is not None and not await _first(election.acquire(), stop.wait()):
            break
        kopf_stop, ready = asyncio.Event(), asyncio.Event()
        op = asyncio.create_task(kopf.operator(
            registry=handlers.REGISTRY, standalone=True, clusterwide=not namespaces, namespaces=namespaces or (),
            stop_flag=kopf_stop, ready_flag=ready, memo=kopf.Memo(ctx=ctx)), name="kopf")
        KOPF_STARTS.inc()
        IS_LEADER.set(1)
        stopping, readied = asyncio.create_task(stop.wait()), asyncio.create_task(ready.wait())
        holding = asyncio.create_task(election.hold()) if election is not None else None
        watched = {op, stopping, readied} | ({holding} if holding is not None else set())
        try:
            while True:
                done, _ = await asyncio.wait(watched, return_when=asyncio.FIRST_COMPLETED)
                if done == {readied}:
                    await asyncio.sleep(0.2)
                    on_signals()  # kopf took SIGTERM/SIGINT over: give them back
                    watched.discard(readied)
                    continue
                if op in done and not kopf_stop.is_set() and not stop.is_set() and not op.cancelled() \
                        and op.exception() is None:
                    # kopf ends without an error only when told to: by kopf_stop (not set) or by
                    # a SIGTERM/SIGINT that reached its own handlers (from its start until ready)
                    # - meant for this process, which would otherwise start kopf again and act,
                    # outside the Service, until the kubelet's SIGKILL.
                    log.info("the operator took this process's stop signal: stopping")
                    stop.set()
                break  # stopping, the Lease lost (holding), or kopf ended
        finally:
            IS_LEADER.set(0)
            kopf_stop.set()
            for task in (stopping, readied, holding):
                if task is not None:
                    task.cancel()
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await asyncio.wait_for(op, timeout=30)
            on_signals()
        if op.done() and not op.cancelled() and op.exception() is not None:
            log.error("the operator stopped with an error; starting again in 5s", exc_info=op.exception())
            await _first(asyncio.sleep(5), stop.wait())
    if election is not None:
        await election.release()


async def _first(main: Coroutine[Any, Any, Any], stopper: Coroutine[Any, Any, Any]) -> bool:
    """Run both; True when ``main`` finished first."""
    a: asyncio.Task[Any] = asyncio.create_task(main)
    b: asyncio.Task[Any] = asyncio.create_task(stopper)
    done, pending = await asyncio.wait([a, b], return_when=asyncio.FIRST_COMPLETED)
    for task in pending:
        task.cancel()
    await asyncio.gather(*pending, return_exceptions=True)
    return a in done


class _Http(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def _serve_uploads(kl: bootstrap.Kubeline, sock: socket.socket, tasks: list[asyncio.Task[Any]]) -> _Http:
    """The attempt-upload listener (its own port: the only one stage pods may reach)."""
    uploads = _Http(uvicorn.Config(app_.create_upload_app(kl), log_config=None, lifespan="off",
                                   access_log=False, timeout_graceful_shutdown=3))
    tasks.append(asyncio.create_task(uploads.serve(sockets=[sock]), name="uploads"))
    log.info("attempt uploads on %s", server.url_of(sock))
    return uploads


async def serve(settings: settings_.Settings, *, host: str = "0.0.0.0", port: int = 8080,  # noqa: S104
                namespaces: list[str] | None = None, dispatch: bool = False, kubeconfig: str | None = None,
                lease_namespace: str | None = None, leader_election: bool = True,
                stop: asyncio.Event | None = None, started: Callable[[str], None] | None = None) -> None:
    """The operator process: HTTP + (leader-elected) kopf + optionally the dispatcher and scheduler,
    which come with the attempt-upload listener on ``settings.upload_port`` (see ``kubeline.server``)."""
    stop = stop or asyncio.Event()
    sock = server.bind(host, port)
    url = f"http://{host}:{sock.getsockname()[1]}"
    upload_sock = server.bind(host, settings.upload_port) if dispatch else None
    kube = k8s.PipelineClient(kubeconfig=kubeconfig, namespace=namespaces[0] if namespaces else None)
    async with contextlib.AsyncExitStack() as stack:
        kl = await _open(stack, settings, stop=stop, replica=dispatch)
        if kl is None:
            sock.close()
            if upload_sock is not None:
                upload_sock.close()
            return
        await server.prepare_auth(kl)
        if dispatch:
            found = await services.reload_pipelines(kl)
            for problem in found.problems:
                log.warning("pipeline not loaded: %s", problem)
        http = _Http(uvicorn.Config(app_.create_app(kl), log_config=None, lifespan="off", access_log=False,
                                    timeout_graceful_shutdown=3))
        election = None
        if leader_election:
            leases = leader_.KubernetesLeases(api_client=kube.api_client, name=LEASE_NAME,
                                              namespace=lease_namespace or kube.namespace)
            election = leader_.LeaderElection(leases=leases, identity=identity())
        ctx = reconcile.Context(kl=kl, kube=kube, is_leader=election.is_leader if election else lambda: True)
        install = _signal_installer(stop)
        install()
        tasks: list[asyncio.Task[Any]] = [asyncio.create_task(http.serve(sockets=[sock]), name="http"),
                 asyncio.create_task(run_operator(ctx, namespaces=namespaces, election=election, stop=stop,
                                                  on_signals=install), name="operator")]
        uploads = _serve_uploads(kl, upload_sock, tasks) if upload_sock is not None else None
        # what `kubeline server` runs: dispatcher, scheduler, git sync, notifications, retention
        background = server.start_background(kl, "all") if dispatch else []
        announce = asyncio.create_task(_announce(http, url, started))
        try:
            await _first(stop.wait(), asyncio.wait([tasks[0], tasks[1]], return_when=asyncio.FIRST_COMPLETED))
        finally:
            stop.set()
            announce.cancel()
            # No new runs from here on, before the operator's (slower) stop: a replica on its way
            # out that went on claiming for kopf's shutdown would take runs it cannot finish, of
            # pipelines the new leader wrote to a folder of its own (emptyDir pods: dev overlay).
            for task in background:
                task.cancel()
            await asyncio.gather(*background, return_exceptions=True)
            http.should_exit = True
            if uploads is not None:
                uploads.should_exit = True
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await asyncio.wait_for(tasks[1], timeout=40)
            for task in tasks[2:]:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await kl.engine.shutdown()
            kube.close()
            sock.close()
            if upload_sock is not None:
                upload_sock.close()


async def _open(stack: contextlib.AsyncExitStack, settings: settings_.Settings, *,
                stop: asyncio.Event, replica: bool) -> bootstrap.Kubeline | None:
    """Open Kubeline, waiting for the database (PostgreSQL may start after us): no crash loop."""
    delay = 1.0
    while not stop.is_set():
        try:
            kl = await stack.enter_async_context(bootstrap.open_kubeline(settings, replica=replica))
            bootstrap.settle_heap()
            return kl
        except (OSError, ConnectionError) as exc:
            reason: BaseException = exc
        except Exception as exc:
            if "connect" not in str(exc).lower():
                raise
            reason = exc
        log.warning("the database is not reachable yet (%s); retrying in %.0fs", reason, delay)
        await _first(asyncio.sleep(delay), stop.wait())
        delay = min(delay * 2, 15.0)
    return None


async def _announce(http: uvicorn.Server, url: str, started: Callable[[str], None] | None) -> None:
    while not http.started:  # noqa: ASYNC110 - uvicorn has no "started" event
        await asyncio.sleep(0.05)
    log.info("kubeline operator listening on %s", url)
    if started is not None:
        started(url)


def _signal_installer(stop: asyncio.Event) -> Callable[[], None]:
    loop = asyncio.get_running_loop()

    def install() -> None:
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(RuntimeError, ValueError, NotImplementedError):
                loop.add_signal_handler(sig, stop.set)

    return install
