"""What the executor knows about one attempt it follows: last seen Job/Pod, and who waits.

Watch events arrive on the event loop (``watches``) and are applied here; ``wait`` and the log
task sleep on ``Tracked.changed`` (a generation counter: a change between reading the state and
sleeping is never missed). Stale events (a relist replaying an older object) are dropped by
comparing resourceVersions.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from typing import Any

from kubeline.executors import base
from kubeline.executors.kubernetes import logs, metrics, reasons


def _version(obj: dict[str, Any] | None) -> int:
    try:
        return int((obj or {}).get("metadata", {}).get("resourceVersion", -1))
    except (TypeError, ValueError):
        return -1


def _newer(old: dict[str, Any] | None, new: dict[str, Any]) -> bool:
    if old is None:
        return True
    if old.get("metadata", {}).get("uid") != new.get("metadata", {}).get("uid"):
        return str(new["metadata"].get("creationTimestamp", "")) >= str(
            old["metadata"].get("creationTimestamp", ""))
    return _version(new) >= _version(old)


@dataclasses.dataclass(eq=False, kw_only=True)
class Tracked:
    handle: dict[str, Any]
    sink: base.LogSink
    position: logs.Position
    seen: reasons.Seen = dataclasses.field(default_factory=reasons.Seen)
    cancelled: bool = False
    deleting: bool = False  # Kubeline deletes the Job: disappearing objects are no surprise
    finished: bool = False  # wait() has its result
    follower: logs.Follower | None = None
    log_task: asyncio.Task[None] | None = None
    owner_task: asyncio.Task[None] | None = None  # the Job becoming its Secret's owner
    uploaded: bool = False  # its outputs reached the store: the stage exited 0
    bound_at: float | None = None  # first seen on a node (how long to look for the upload quickly)
    references_checked: bool = False  # looked for the Secrets/ConfigMaps a config error may miss
    killed_at: float | None = None  # first saw the pod killed without a Job condition
    generation: int = 0
    usage: metrics.Usage | None = None  # latest metrics.k8s.io sample, with the peak memory
    warned: set[str] = dataclasses.field(default_factory=set)  # soft limits already warned about
    _waiters: set[asyncio.Future[None]] = dataclasses.field(default_factory=set)

    def notify(self) -> None:
        self.generation += 1
        for waiter in self._waiters:
            if not waiter.done():
                waiter.set_result(None)

    async def changed(self, since: int, timeout: float) -> None:  # noqa: ASYNC109
        """Return when something changed after generation ``since``, or after ``timeout`` s."""
        if self.generation != since:
            return
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.add(waiter)
        try:
            with contextlib.suppress(TimeoutError):  # not wait_for: on 3.11 it can lose a cancel
                async with asyncio.timeout(max(timeout, 0.0)):
                    await waiter
        finally:
            self._waiters.discard(waiter)

    def apply(self, kind: str, event: str, obj: dict[str, Any]) -> None:
        seen = self.seen
        if kind == "jobs":
            if event == "DELETED":
                seen = dataclasses.replace(seen, job_gone=not self.deleting and not self.finished)
            elif _newer(seen.job, obj):
                seen = dataclasses.replace(seen, job=obj)
        elif event == "DELETED":
            same = seen.pod is None or seen.pod["metadata"].get("uid") == obj["metadata"].get("uid")
            ended = reasons.container_status(obj) and "terminated" in (
                reasons.container_status(obj) or {}).get("state", {})
            if same and not ended and not self.deleting and not self.finished:
                seen = dataclasses.replace(seen, pod=obj, pod_gone=True)
        elif _newer(seen.pod, obj):
            seen = dataclasses.replace(seen, pod=obj)
        self.seen = seen
        self.notify()

    def missing(self, kind: str) -> None:
        """A relist did not find the object this attempt had (deleted while the watch was down)."""
        if kind == "jobs" and self.seen.job is not None:
            self.apply("jobs", "DELETED", self.seen.job)
        elif kind == "pods" and self.seen.pod is not None:
            self.apply("pods", "DELETED", self.seen.pod)
