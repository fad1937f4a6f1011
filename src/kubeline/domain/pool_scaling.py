"""How many pods a worker pool needs: its demand, as pure functions of counts and specs.

The demand of a pool is what would occupy its slots now: attempts on it running or waiting for a
slot, plus the work still queued for it (runs not yet started, attempts recorded but not yet
handed to the executor). Queued runs are not attributed to a pool in the database, so their
share is derived from their pipeline's spec: each queued run will start with its first stages
(those that depend on nothing, at most ``parallelism`` of them), and those that run on
``kubernetes-pool`` go to the pool ``pools.choose`` picks, as the executor will. The database only
counts (``Store.pool_demand_counts``: GROUP BY, never the rows); this module attributes the counts.

``desired`` turns a demand into pods (``ceil(demand / slots)`` within the autoscale bounds) and
``Stabilizer`` delays scale-down: pods are removed only when every recommendation of the last
``scaleDownDelay`` seconds was lower (an HPA's stabilization window), so a short lull between two
runs does not remove the pods the next one needs. Removing a pod never kills its attempts: the
pod drains first (``runtime.worker``).
"""

from __future__ import annotations

import collections
import dataclasses
import math

from kubeline.domain import pools, specs


@dataclasses.dataclass(frozen=True, kw_only=True)
class Demand:
    active: int = 0  # attempts handed to the executor: running on a pod, or waiting for a slot
    queued: int = 0  # first stages of queued runs, and attempts not yet handed to the executor

    @property
    def total(self) -> int:
        return self.active + self.queued

    def split(self, *, capacity: int) -> tuple[int, int]:
        """(running, waiting): the active attempts beyond the ready pods' slots (``capacity``) wait."""
        running = min(self.active, capacity)
        return running, self.active - running


def attribute(*, queued_runs: dict[str, int], held: dict[str, int], unsent: dict[tuple[str, str], int],
              pipelines: dict[str, specs.PipelineSpec], pools_: list[pools.PoolSpec],
              default_executor: str) -> dict[str, Demand]:
    """Per pool (every one of ``pools_``), its demand from the store's counts (``executor_demand``)."""
    active: collections.Counter[str] = collections.Counter(held)
    queued: collections.Counter[str] = collections.Counter()
    for pipeline, count in queued_runs.items():
        spec = pipelines.get(pipeline)
        if spec is None:  # deleted since: its runs fail at their start
            continue
        for pool, stages in first_stages(spec, pipeline=pipeline, default_executor=default_executor,
                                         pools_=pools_).items():
            queued[pool] += count * stages
    for (pipeline, stage_id), count in unsent.items():
        spec = pipelines.get(pipeline)
        stage = next((s for s in spec.stages if s.id == stage_id), None) if spec is not None else None
        if spec is None or stage is None:
            continue
        chosen = stage_pool(spec, stage, pipeline=pipeline, default_executor=default_executor, pools_=pools_)
        if chosen is not None:
            queued[chosen] += count
    return {p.name: Demand(active=active[p.name], queued=queued[p.name]) for p in pools_}


def stage_pool(spec: specs.PipelineSpec, stage: specs.StageSpec, *, pipeline: str, default_executor: str,
               pools_: list[pools.PoolSpec]) -> str | None:
    """The pool a stage of ``pipeline`` runs on, or None (another executor, or no pool serves it:
    that stage fails at its start and needs no pod)."""
    if (stage.executor or spec.executor or default_executor) != pools.EXECUTOR:
        return None
    asked = (stage.kubernetes or spec.kubernetes).pool
    try:
        return pools.choose(pools_, pipeline=pipeline, tags=spec.tags, asked=asked).name
    except ValueError:
        return None


def first_stages(spec: specs.PipelineSpec, *, pipeline: str, default_executor: str,
                 pools_: list[pools.PoolSpec]) -> dict[str, int]:
    """Pool -> how many of a new run's first stages it runs (those depending on nothing, at most
    ``parallelism``)."""
    roots = [s for s in spec.stages if not s.depends_on]
    if spec.parallelism is not None:
        roots = roots[:spec.parallelism]
    found: collections.Counter[str] = collections.Counter()
    for stage in roots:
        pool = stage_pool(spec, stage, pipeline=pipeline, default_executor=default_executor, pools_=pools_)
        if pool is not None:
            found[pool] += 1
    return dict(found)


def desired(demand: int, *, slots: int, autoscale: pools.Autoscale) -> int:
    """Pods for ``demand`` attempts at ``slots`` each, within [minReplicas, maxReplicas]."""
    return min(max(math.ceil(demand / slots), autoscale.min_replicas), autoscale.max_replicas)


class Stabilizer:
    """Scale up at once, scale down to the highest recommendation of the last ``delay`` seconds.

    One per pool, kept by the replica that scales (the leader); a new leader starts with an empty
    window, so it waits a whole ``delay`` before its first scale-down.
    """

    def __init__(self) -> None:
        self._seen: collections.deque[tuple[float, int]] = collections.deque()
        self._since: float | None = None

    def decide(self, *, recommended: int, current: int, now: float, delay: float) -> int:
        """The replicas to set now (``current`` when nothing changes)."""
        if self._since is None:
            self._since = now
        self._seen.append((now, recommended))
        while self._seen and self._seen[0][0] < now - delay:
            self._seen.popleft()
        if recommended >= current:
            return recommended
        if now - self._since < delay:  # not watched for a whole window yet: no scale-down
            return current
        return min(current, max(count for _, count in self._seen))
