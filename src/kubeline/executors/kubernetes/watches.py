"""Follow every Kubeline Job and Pod of a namespace with two watches, whatever the attempt count.

One thread per kind lists the objects that carry the ``kubeline.dev/attempt`` label, then
watches from that list's resourceVersion (bookmarks on; relist after ``410 Gone``), and hands
each event to the event loop with ``call_soon_threadsafe``. After every (re)list it also hands
over the set of attempts that were listed, so an object deleted while the watch was down is
noticed. The executor keeps one ``NamespaceWatch`` per namespace it has started Jobs in:
20 concurrent attempts cost two connections, not forty polls.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from kubeline.domain import errors
from kubeline.executors.kubernetes import kube, manifests

log = logging.getLogger("kubeline.executors.kubernetes")
OnEvent = Callable[[str, str, dict[str, Any]], None]  # (kind, type, object)
OnListed = Callable[[str, set[str]], None]  # (kind, attempt ids present)
KINDS = ("jobs", "pods")
_WATCH_SECONDS = 240
READY_FAILURES = 3  # failed first lists (0.4 + 0.8 s apart) before the server counts as unreachable


class NamespaceWatch:
    def __init__(self, *, kube_: kube.Kube, namespace: str, loop: asyncio.AbstractEventLoop,
                 on_event: OnEvent, on_listed: OnListed) -> None:
        self.kube = kube_
        self.namespace = namespace
        self.loop = loop
        self.on_event = on_event
        self.on_listed = on_listed
        self.listed = {kind: asyncio.Event() for kind in KINDS}
        self.unlisted_failures = 0  # failed first lists: the API server may be unreachable
        self.error = ""
        self._failed = asyncio.Event()
        self._stop = threading.Event()
        self._responses: dict[str, Any] = {}
        self._threads = [threading.Thread(target=self._run, args=(kind,), daemon=True,
                                          name=f"kubeline-watch-{kind}-{namespace}") for kind in KINDS]

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    async def ready(self, *, give_up_after: int = READY_FAILURES) -> None:
        """Both kinds listed once (events after this are not missed); ``ExecutorError`` when
        the first list failed ``give_up_after`` times (a few seconds: the server is unreachable)."""
        for event in self.listed.values():
            while not event.is_set():
                if self.unlisted_failures >= give_up_after:
                    raise errors.ExecutorError(
                        f"cannot reach the Kubernetes API server at {self.kube.api.configuration.host} "
                        f"({self.error}); check the kubeconfig's server and that the cluster is running "
                        "(kubectl get nodes)")
                self._failed.clear()
                waits = {asyncio.ensure_future(event.wait()), asyncio.ensure_future(self._failed.wait())}
                _, pending = await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
                for waiter in pending:
                    waiter.cancel()

    def stop(self) -> None:
        self._stop.set()
        for response in list(self._responses.values()):
            kube.abort(response)

    def _emit(self, fn: Callable[..., None], *args: Any) -> None:
        if not self._stop.is_set() and not self.loop.is_closed():
            try:
                self.loop.call_soon_threadsafe(fn, *args)
            except RuntimeError:  # the loop closed meanwhile
                self._stop.set()

    def _list_failed(self, error: str) -> None:
        self.unlisted_failures += 1
        self.error = error
        self._failed.set()

    def _list(self, kind: str) -> str:
        answer = self.kube.request("GET", self.kube.path(kind, self.namespace),
                                   query=[("labelSelector", manifests.ATTEMPT_LABEL)])
        present: set[str] = set()
        for item in answer.get("items", []):
            item.setdefault("kind", "Job" if kind == "jobs" else "Pod")
            attempt = item["metadata"].get("labels", {}).get(manifests.ATTEMPT_LABEL)
            if attempt:
                present.add(attempt)
            self._emit(self.on_event, kind, "ADDED", item)
        self._emit(self.on_listed, kind, present)
        self._emit(self.listed[kind].set)
        return str(answer["metadata"]["resourceVersion"])

    def _run(self, kind: str) -> None:
        version: str | None = None
        failures = 0
        while not self._stop.is_set():
            try:
                if version is None:
                    version = self._list(kind)
                version = self._watch(kind, version)
                failures = 0
            except Exception as exc:  # any failure: back off and relist
                if self._stop.is_set():
                    return
                failures += 1
                if isinstance(exc, kube.ApiError) and exc.status == 410:
                    version = None
                    continue
                log.warning("watch of %s in %s failed (%s); retrying", kind, self.namespace,
                            kube.describe(exc))
                if version is None and not self.listed[kind].is_set():
                    self._emit(self._list_failed, kube.describe(exc))
                version = None
                time.sleep(min(0.2 * 2 ** failures, 5.0))

    def _watch(self, kind: str, version: str) -> str | None:
        response = self.kube.stream(
            self.kube.path(kind, self.namespace),
            query=[("labelSelector", manifests.ATTEMPT_LABEL), ("watch", "true"),
                   ("resourceVersion", version), ("allowWatchBookmarks", "true"),
                   ("timeoutSeconds", _WATCH_SECONDS)],
            read_timeout=_WATCH_SECONDS + 30)
        self._responses[kind] = response
        try:
            for line in kube.iter_lines(response):
                if self._stop.is_set():
                    return version
                if not line.strip():
                    continue
                event = json.loads(line)
                kind_of_event, obj = event.get("type"), event.get("object") or {}
                if kind_of_event == "ERROR":
                    return None  # 410 Gone or another error: relist
                version = obj.get("metadata", {}).get("resourceVersion", version)
                if kind_of_event != "BOOKMARK":
                    self._emit(self.on_event, kind, kind_of_event, obj)
        finally:
            self._responses.pop(kind, None)
            response.release_conn()
        return version
