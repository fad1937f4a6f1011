"""Prometheus metrics of one Kubeline process, in its own registry (served at ``/metrics``).

Counters and histograms are fed by what *this* process did: ``attach`` wraps the engine's
``notify`` (called by a run's driver after every change it makes), and reads the driver's own
records, so with several replicas each reports the runs and stages it drove and a PromQL ``sum``
over replicas counts each once. Gauges that describe shared state (queue depth) are read from
the store at scrape time; ``kubeline_scheduler_lag_seconds`` is set by the scheduler through
``set_scheduler_lag``.
"""

from __future__ import annotations

import collections
from collections.abc import Callable, Hashable
from typing import TYPE_CHECKING, TypeVar

import prometheus_client

from kubeline.domain import pool_scaling, pools, runs, states

if TYPE_CHECKING:
    from kubeline.engine import engine as engine_
    from kubeline.storage import base as storage

CONTENT_TYPE = prometheus_client.CONTENT_TYPE_LATEST
_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600, 7200, float("inf"))
_K = TypeVar("_K", bound=Hashable)
_ERROR_STATES = {states.RunState.FAILED, states.RunState.TIMED_OUT}


class Metrics:
    def __init__(self) -> None:
        self.registry = prometheus_client.CollectorRegistry()
        r = self.registry
        self.runs_total = prometheus_client.Counter(
            "kubeline_runs_total", "Runs that reached a final state here.", ["pipeline", "status"], registry=r)
        self.run_duration = prometheus_client.Histogram(
            "kubeline_run_duration_seconds", "Run duration, start to end.", ["pipeline"], buckets=_BUCKETS,
            registry=r)
        self.stage_duration = prometheus_client.Histogram(
            "kubeline_stage_duration_seconds", "Stage duration, first attempt start to end.",
            ["pipeline", "status"], buckets=_BUCKETS, registry=r)
        self.run_errors = prometheus_client.Counter(
            "kubeline_run_errors_total", "Runs that ended failed or timed out.", ["pipeline"], registry=r)
        self.queue_depth = prometheus_client.Gauge(
            "kubeline_queue_depth", "Runs waiting in the queue (all replicas).", registry=r)
        self.running_attempts = prometheus_client.Gauge(
            "kubeline_running_attempts", "Attempts this process is driving.", registry=r)
        self.pool_attempts = prometheus_client.Gauge(
            "kubeline_pool_attempts", "Attempts this process has on a worker pool: waiting for a pod slot, or "
            "running (sum over replicas / the pool's slots = the pods it needs: an HPA's metric).",
            ["pool", "state"], registry=r)
        self.pool_demand = prometheus_client.Gauge(
            "kubeline_pool_demand", "Attempts a worker pool is asked for: on it (running or waiting for a slot) "
            "plus the first stages of the runs queued for it. Read from the database, so every replica "
            "exports the same value: aggregate with max, not sum (demand / slots = the pods it needs).",
            ["pool"], registry=r)
        self.scheduler_lag = prometheus_client.Gauge(
            "kubeline_scheduler_lag_seconds", "How late the last schedule fire was started.", registry=r)
        self._stages_seen: collections.OrderedDict[tuple[str, str], None] = collections.OrderedDict()
        self._runs_seen: collections.OrderedDict[str, None] = collections.OrderedDict()

    # feeding ------------------------------------------------------------------------------
    def run_finished(self, run: runs.Run) -> None:
        """Count a final run once (idempotent per run id in this process)."""
        if not states.is_final(run.state) or not _first(self._runs_seen, run.id):
            return
        self.runs_total.labels(pipeline=run.pipeline, status=run.state.value).inc()
        if run.duration is not None:
            self.run_duration.labels(pipeline=run.pipeline).observe(run.duration)
        if run.state in _ERROR_STATES:
            self.run_errors.labels(pipeline=run.pipeline).inc()

    def stage_finished(self, *, pipeline: str, stage: runs.StageRun) -> None:
        if not states.is_final(stage.state) or not _first(self._stages_seen, (stage.run_id, stage.stage_id)):
            return
        if stage.started_at is not None and stage.finished_at is not None:
            seconds = (stage.finished_at - stage.started_at).total_seconds()
            self.stage_duration.labels(pipeline=pipeline, status=stage.state.value).observe(max(seconds, 0.0))

    def observe_driver(self, engine: engine_.Engine, run_id: str) -> None:
        driver = engine.drivers.get(run_id)
        if driver is None:
            return
        for stage in list(driver.stages.values()):
            self.stage_finished(pipeline=driver.run.pipeline, stage=stage)
        self.run_finished(driver.run)

    async def refresh(self, *, store: storage.Store, engine: engine_.Engine | None) -> None:
        """Gauges read at scrape time."""
        counts = await store.count_runs(states_in=[states.RunState.QUEUED])  # a COUNT over the index, no finished run
        self.queue_depth.set(counts.get(states.RunState.QUEUED, 0))
        if engine is not None:
            self.running_attempts.set(sum(len(d.handles) for d in list(engine.drivers.values())))
            self.pool_attempts.clear()
            for executor in list(engine.executors.values()):
                load = getattr(executor, "pool_load", None)  # the kubernetes-pool executor
                for pool, counts in (load() if load is not None else {}).items():
                    for state, count in counts.items():
                        self.pool_attempts.labels(pool=pool, state=state).set(count)
            await self._refresh_pool_demand(store=store, engine=engine)

    async def _refresh_pool_demand(self, *, store: storage.Store, engine: engine_.Engine) -> None:
        specs = getattr(engine.executors.get(pools.EXECUTOR), "pool_specs", None)
        self.pool_demand.clear()
        if specs is None:
            return
        counts = await store.executor_demand(executor=pools.EXECUTOR)  # GROUP BY, never the rows
        found = pool_scaling.attribute(queued_runs=counts.queued_runs, held=counts.held, unsent=counts.unsent,
                                       pipelines={n: p.spec for n, p in counts.pipelines.items()},
                                       pools_=specs(), default_executor=engine.default_executor)
        for pool, demand in found.items():
            self.pool_demand.labels(pool=pool).set(demand.total)

    def render(self) -> bytes:
        return prometheus_client.generate_latest(self.registry)


def _first(seen: collections.OrderedDict[_K, None], key: _K, *, keep: int = 100_000) -> bool:
    if key in seen:
        return False
    seen[key] = None
    while len(seen) > keep:
        seen.popitem(last=False)
    return True


METRICS = Metrics()


def set_scheduler_lag(seconds: float) -> None:
    """For the scheduler: how late (seconds) the fire it just made was, relative to its due time."""
    METRICS.scheduler_lag.set(max(seconds, 0.0))


def attach(engine: engine_.Engine, metrics: Metrics = METRICS) -> None:
    """Feed ``metrics`` from every change this engine's drivers make (idempotent per engine)."""
    if getattr(engine, "_kubeline_metrics", None) is metrics:
        return
    original: Callable[[str], None] = engine.notify

    def notify(run_id: str) -> None:
        metrics.observe_driver(engine, run_id)
        original(run_id)

    engine.notify = notify  # type: ignore[method-assign]
    engine._kubeline_metrics = metrics  # type: ignore[attr-defined]
