"""The scheduler: every tick, turn the due fires of enabled schedules into queued runs.

Idempotent by key, so any number of replicas may tick at once: a fire is recorded under
(``{pipeline}/{schedule_id}``, fire time) by ``Store.claim_fire``, which inserts the run of the
one process whose insert won in the same transaction: exactly once, and a crash loses neither
the fire nor its run alone. (A fire recorded without a run, by an older version, is taken over
after ``stale_after`` seconds.)

Every replica computes the same fire times (``domain.schedules`` is pure and deterministic);
``since`` for a schedule is its last recorded fire, or when a scheduler first saw it (stored,
so all replicas agree), which keeps a new schedule from "catching up" on its whole past.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

from kubeline.domain import errors, runs, schedules, specs
from kubeline.storage import base as storage

if TYPE_CHECKING:
    from kubeline import bootstrap
    from kubeline.engine import engine as engine_

log = logging.getLogger(__name__)
# A fire's run that could not be made (invalid inputs, ...): recorded so it is not retried.
NO_RUN = ""


def schedule_key(pipeline: str, schedule_id: str) -> str:
    return f"{pipeline}/{schedule_id}"


@dataclasses.dataclass(frozen=True, kw_only=True)
class Entry:
    """One schedule of one pipeline, with its effective enabled state."""

    pipeline: runs.Pipeline
    schedule_id: str
    spec: specs.ScheduleSpec
    state: storage.ScheduleState | None

    @property
    def key(self) -> str:
        return schedule_key(self.pipeline.name, self.schedule_id)

    @property
    def enabled(self) -> bool:
        """Disabled pipelines never fire; an API override beats the spec's ``enabled``."""
        if not self.pipeline.spec.enabled:
            return False
        if self.state is not None and self.state.enabled is not None:
            return self.state.enabled
        return self.spec.enabled


async def entries(store: storage.Store, *, pipeline: str | None = None) -> list[Entry]:
    """Every schedule (of one pipeline, or all) with its stored state."""
    pipelines = [await store.get_pipeline(pipeline)] if pipeline else await store.list_pipelines()
    stored = {s.schedule_key: s for s in await store.list_schedule_states()}
    return [
        Entry(pipeline=p, schedule_id=sid, spec=spec, state=stored.get(schedule_key(p.name, sid)))
        for p in pipelines
        for sid, spec in zip(p.spec.schedule_ids(), p.spec.schedules, strict=True)
    ]


class Ticker:
    def __init__(
        self,
        *,
        store: storage.Store,
        engine: engine_.Engine,
        clock: Callable[[], dt.datetime] = runs.utcnow,
        grace: dt.timedelta = schedules.DEFAULT_GRACE,
        refresh: float = 5.0,
        stale_after: float = 60.0,
        on_lag: Callable[[float], None] | None = None,
    ) -> None:
        self.store = store
        self.engine = engine
        self.clock = clock
        self.grace = grace
        self.refresh = refresh
        self.stale_after = stale_after
        self.on_lag = on_lag
        self._entries: list[Entry] = []
        self._last: dict[str, dt.datetime] = {}
        self._next: dict[str, dt.datetime | None] = {}
        self._loaded_at: dt.datetime | None = None

    async def _load(self, now: dt.datetime) -> None:
        self._entries = await entries(self.store)
        self._last = await self.store.last_fire_times()
        self._next.clear()
        self._loaded_at = now

    async def tick(self) -> list[runs.Run]:
        """Make the runs of every fire due now; return the runs this process made."""
        now = self.clock()
        if self._loaded_at is None or (now - self._loaded_at).total_seconds() >= self.refresh or now < self._loaded_at:
            await self._load(now)
        made: list[runs.Run] = []
        for entry in self._entries:
            if not entry.enabled:
                continue
            upcoming = self._next.get(entry.key, now)
            if upcoming is None or upcoming > now:
                continue
            try:
                made.extend(await self._fire_due(entry, now))
            except errors.KubelineError as exc:
                log.warning("schedule %s: %s", entry.key, exc)
        return made

    async def _fire_due(self, entry: Entry, now: dt.datetime) -> list[runs.Run]:
        state = entry.state or await self.store.ensure_schedule_state(entry.key, since=now)
        since = max(self._last.get(entry.key, state.since), state.since)
        made: list[runs.Run] = []
        for fire_time in schedules.due(entry.spec, since=since, now=now, grace=self.grace):
            run = await self._fire(entry, fire_time)
            if run is not None:
                made.append(run)
            self._last[entry.key] = fire_time
        self._next[entry.key] = schedules.next_fire(entry.spec, now)
        return made

    async def _fire(self, entry: Entry, fire_time: dt.datetime) -> runs.Run | None:
        """Record the fire and insert its run in one transaction (a crash loses neither alone)."""
        trigger = runs.TriggeredBy(kind=runs.TriggerKind.SCHEDULE,
                                   detail=schedules.describe_trigger(entry.schedule_id, fire_time))
        try:
            new = self.engine.prepare(entry.pipeline, schedule_id=entry.schedule_id, triggered_by=trigger)
        except errors.KubelineError as exc:
            if await self.store.claim_fire(entry.key, fire_time, stale_after=self.stale_after):
                log.warning("schedule %s: the run of the %s fire was not made: %s", entry.key,
                            fire_time.isoformat(), exc)
                await self.store.set_fire_run(entry.key, fire_time, NO_RUN)
            return None
        if not await self.store.claim_fire(entry.key, fire_time, stale_after=self.stale_after, run=new):
            return None
        run = new.run
        self.engine.notify(run.id)
        lag = (run.created_at - fire_time).total_seconds()
        if self.on_lag is not None:
            self.on_lag(max(lag, 0.0))
        log.info("schedule %s fired for %s: run %s (%.3fs late)", entry.key, fire_time.isoformat(), run.id, lag)
        return run


async def run_forever(kubeline: bootstrap.Kubeline, *, interval: float = 1.0) -> None:
    """The scheduler role: tick about once a second, just after each whole second."""
    from kubeline import metrics

    ticker = Ticker(store=kubeline.store, engine=kubeline.engine, on_lag=metrics.set_scheduler_lag)
    loop = asyncio.get_running_loop()
    while True:
        started = loop.time()
        try:
            await ticker.tick()
        except Exception:  # a database hiccup must not stop the scheduler
            log.exception("scheduler tick failed; retrying")
        now = runs.utcnow()
        to_next_second = 1.0 - now.microsecond / 1_000_000 + 0.01
        await asyncio.sleep(max(0.05, min(interval - (loop.time() - started), to_next_second)))
