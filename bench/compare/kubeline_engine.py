"""Kubeline: the engine's dispatcher loop (``Engine.serve``, what ``kubeline server`` runs) in this
process on SQLite; runs are submitted to the queue and claimed by the loop like any trigger's.
Timings from the store: run created/started/finished, attempt created/started/finished.

``executor`` is written into the pipeline spec, so the warm executor is used exactly when the
engine has one configured (``local-warm`` falls back to ``local`` otherwise: recorded per run).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import pathlib
import time
from typing import Any

from compare import stats, workloads

ISOLATION = {"local": "process per task (subprocess)", "local-warm": "process per task (fork of a warm worker)"}


class KubelineEngine:
    name = "kubeline"

    def __init__(self, *, executor: str, work: pathlib.Path, chosen: list[workloads.Workload]) -> None:
        self.executor, self.work, self.chosen = executor, work, chosen
        self.name = f"kubeline-{executor}"
        self.label = f"Kubeline ({executor})"
        self.isolation = ISOLATION[executor]
        self.runner = asyncio.Runner()
        self.pipelines: dict[str, Any] = {}
        self.used_executors: set[str] = set()

    def __enter__(self) -> KubelineEngine:
        os.environ["KUBELINE_HOME"] = str(self.work / f"kubeline-home-{self.executor}")
        self.runner.run(self._open())
        return self

    async def _open(self) -> None:
        from kubeline import bootstrap
        from kubeline import settings as settings_
        from kubeline.pipelines import loader

        self._stack = contextlib.AsyncExitStack()
        settings = settings_.Settings()
        self.kl = await self._stack.enter_async_context(bootstrap.open_kubeline(settings))
        self.configured = sorted(self.kl.executors)
        for w in self.chosen:
            folder = workloads.kubeline_pipeline(self.work / "kubeline-pipelines", w, executor=self.executor)
            pipeline = loader.load_folder(folder)
            await self.kl.store.upsert_pipeline(pipeline)
            self.pipelines[w.name] = pipeline
        bootstrap.settle_heap()  # as `kubeline server` does once it has started
        self.serving = asyncio.create_task(self.kl.engine.serve())

    def __exit__(self, *exc: object) -> None:
        self.runner.run(self._close())
        self.runner.close()

    async def _close(self) -> None:
        self.serving.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.serving
        await self.kl.engine.shutdown()
        await self._stack.aclose()

    def run(self, workload: workloads.Workload, *, timeout: float) -> stats.RunTiming:
        return self.runner.run(asyncio.wait_for(self._run(workload, within=timeout), timeout))

    async def _run(self, workload: workloads.Workload, *, within: float) -> stats.RunTiming:
        from kubeline.api import services

        began = time.monotonic()
        run = await self.kl.engine.submit(self.pipelines[workload.name])
        # As the API's wait does: woken once, by the end of the run's driver. The harness runs in
        # the engine's process, so it must not load it: reading the run every 20 ms took the
        # loop's GIL from it (a reader thread's transaction each time), ~8% of a chain's wall.
        run = await services.wait_final(self.kl, run.id, within=within)
        observed = time.monotonic() - began
        tasks = {}
        for attempt in await self.kl.store.list_attempts(run.id):
            self.used_executors.add(attempt.executor)
            if attempt.started_at and attempt.finished_at:
                tasks[attempt.stage_id] = stats.TaskTiming(task_id=attempt.stage_id,
                                                           queued=attempt.created_at.timestamp(),
                                                           started=attempt.started_at.timestamp(),
                                                           ended=attempt.finished_at.timestamp())
        assert run.started_at is not None and run.finished_at is not None
        return stats.RunTiming(queued=run.created_at.timestamp(), started=run.started_at.timestamp(),
                               ended=run.finished_at.timestamp(), observed=observed,
                               split=stats.split(tasks, workload.tasks), state=run.state.value)
