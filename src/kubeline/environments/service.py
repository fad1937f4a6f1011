"""Pre-heating: build the venvs a pipeline needs in the background, so its first run does not
pay the install (Fast-Flow pre-heats the same way on discovery and git sync).

``preheat`` is called with the pipelines a discovery or a git sync loaded; it queues every venv
they need that is not built yet, and at most ``concurrency`` builds run at once (uv installs are
CPU, disk and network heavy; a sync of fifty pipelines must not start fifty). A build is
``VenvCache.ensure``, the same call a run makes, so a run that starts while its venv is being
pre-heated waits for that build instead of starting a second one (an asyncio lock per key in this
process, an ``flock`` per key across processes).

A pipeline's environment state is derived, not stored: each venv it needs is ready (built),
building (here or in another process on this machine), pending (queued here), failed (the
reason recorded by the last build of that key) or missing; the pipeline shows the worst. A key
that failed is not queued again by later discoveries in this process (a run, a restart, or a
change of the requirements file, which gives a new key, tries again).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Iterable
from typing import Literal

from kubeline.domain import errors, runs
from kubeline.environments import needs
from kubeline.executors import local_venvs

log = logging.getLogger("kubeline.environments")
State = Literal["ready", "building", "pending", "failed", "missing", "none"]
_WORST_FIRST: tuple[State, ...] = ("failed", "building", "pending", "missing", "ready")


@dataclasses.dataclass(frozen=True, kw_only=True)
class VenvState:
    need: needs.VenvNeed
    key: str
    state: State
    reason: str | None = None


@dataclasses.dataclass(frozen=True, kw_only=True)
class EnvironmentState:
    state: State
    reason: str | None
    venvs: list[VenvState]


class Environments:
    def __init__(self, *, venvs: local_venvs.VenvCache, default_executor: str, concurrency: int) -> None:
        self.venvs = venvs
        self.default_executor = default_executor
        self.concurrency = concurrency
        self._slots = asyncio.Semaphore(max(concurrency, 1))
        self._pending: set[str] = set()
        self._failed_here: set[str] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    def needs_of(self, pipeline: runs.Pipeline) -> list[needs.VenvNeed]:
        return needs.of(pipeline, default_executor=self.default_executor)

    def preheat(self, pipelines: Iterable[runs.Pipeline]) -> int:
        """Queue the builds these pipelines need; returns how many were queued. Never blocks."""
        if self.concurrency <= 0:
            return 0
        queued = 0
        for pipeline in pipelines:
            for need in self.needs_of(pipeline):
                try:
                    key = self._key(need)
                except errors.ExecutorError as exc:
                    log.warning("pipeline %s: cannot pre-heat: %s", pipeline.name, exc)
                    continue
                if key in self._pending or key in self._failed_here \
                        or self.venvs.status(key).state in ("ready", "building"):
                    continue
                self._pending.add(key)
                task = asyncio.create_task(self._build(need, key=key), name=f"preheat-{key[:12]}")
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
                queued += 1
        return queued

    async def build(self, pipeline: runs.Pipeline) -> EnvironmentState:
        """Build every venv the pipeline needs now, in the foreground (``kubeline environment --build``);
        a failure is in the returned state, not raised."""
        for need in self.needs_of(pipeline):
            async with self._slots:
                try:
                    await self.venvs.ensure(need.python_version, need.requirements, need.extra_packages)
                except errors.ExecutorError as exc:
                    log.info("building the venv of stages %s failed: %s", ", ".join(need.stages), exc)
        return self.state(pipeline)

    @property
    def busy(self) -> bool:
        """Builds are queued or running."""
        return bool(self._tasks)

    async def idle(self) -> None:
        """Wait until every queued build has finished (tests, benchmarks, shutdown)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*list(self._tasks), return_exceptions=True)
        await self.venvs.close()

    def state(self, pipeline: runs.Pipeline) -> EnvironmentState:
        found = [self._venv_state(need) for need in self.needs_of(pipeline)]
        if not found:
            return EnvironmentState(state="none", reason=None, venvs=[])
        worst = min(found, key=lambda v: _WORST_FIRST.index(v.state))
        reason = worst.reason
        if worst.state == "failed" and len(found) > 1:
            reason = f"stages {', '.join(worst.need.stages)}: {reason}"
        return EnvironmentState(state=worst.state, reason=reason, venvs=found)

    async def packages(self, state: VenvState) -> tuple[str | None, list[local_venvs.Package]]:
        """The interpreter version and what a ready venv holds (the dependency view); nothing for
        one that is not built."""
        if state.state != "ready":
            return None, []
        venv = self.venvs.path_of(state.key)
        return self.venvs.python_of(venv), await asyncio.to_thread(self.venvs.packages, venv)

    def _venv_state(self, need: needs.VenvNeed) -> VenvState:
        try:
            key = self._key(need)
        except errors.ExecutorError as exc:
            return VenvState(need=need, key="", state="failed", reason=str(exc))
        status = self.venvs.status(key)
        state: State = status.state
        if state == "missing" and key in self._pending:
            state = "pending"
        return VenvState(need=need, key=key, state=state, reason=status.reason)

    def _key(self, need: needs.VenvNeed) -> str:
        return self.venvs.key(need.python_version, need.requirements, need.extra_packages)

    async def _build(self, need: needs.VenvNeed, *, key: str) -> None:
        try:
            async with self._slots:
                self._pending.discard(key)
                try:
                    await self.venvs.ensure(need.python_version, need.requirements, need.extra_packages)
                except errors.ExecutorError as exc:
                    self._failed_here.add(key)
                    log.warning("pre-heating the venv of stages %s failed: %s", ", ".join(need.stages), exc)
        finally:
            self._pending.discard(key)
