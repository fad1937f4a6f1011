"""MemoryStore methods for leases, schedules and webhooks (the fake of ``sql.scheduling``).

Same semantics as the SQL store; one process, so no locks are needed.
"""

from __future__ import annotations

import builtins
import datetime as dt

from kubeline.domain import runs as runs_
from kubeline.domain import states
from kubeline.storage import base

RATE_WINDOW = dt.timedelta(seconds=60)


class SchedulingMethods:
    """Mixed into ``MemoryStore``; its ``runs`` dict is the one of the store."""

    runs: dict[str, runs_.Run]

    def __init__(self) -> None:
        self.leases: dict[str, base.Lease] = {}
        self.run_executors: dict[str, str] = {}
        self.schedule_states: dict[str, base.ScheduleState] = {}
        self.fires: dict[tuple[str, dt.datetime], base.ScheduleFire] = {}
        self.deliveries: dict[str, dict[str, dt.datetime]] = {}

    # leases --------------------------------------------------------------------------------
    def _running(self, run_id: str) -> bool:
        run = self.runs.get(run_id)
        return run is not None and run.state is states.RunState.RUNNING

    async def renew_leases(self, lease: base.Lease, run_ids: builtins.list[str]) -> builtins.list[str]:
        owned = [r for r in run_ids if self._running(r) and r in self.leases
                 and self.leases[r].owner == lease.owner]
        for run_id in owned:
            self.leases[run_id] = lease
        return owned

    async def release_leases(self, owner: str, run_ids: builtins.list[str]) -> None:
        for run_id in run_ids:
            if run_id in self.leases and self.leases[run_id].owner == owner:
                del self.leases[run_id]

    async def adopt_runs(
        self, lease: base.Lease, *, limit: int, only: builtins.list[str] | None = None
    ) -> builtins.list[runs_.Run]:
        now = runs_.utcnow()
        adopted: builtins.list[runs_.Run] = []
        for run in sorted(self.runs.values(), key=lambda r: r.id):
            if len(adopted) >= limit:
                break
            held = self.leases.get(run.id)
            if only is not None and run.id not in only:
                continue
            if run.state is states.RunState.RUNNING and (held is None or held.until < now):
                self.leases[run.id] = lease
                adopted.append(run)
        return adopted

    # schedules -----------------------------------------------------------------------------
    async def ensure_schedule_state(self, schedule_key: str, *, since: dt.datetime) -> base.ScheduleState:
        if schedule_key not in self.schedule_states:
            self.schedule_states[schedule_key] = base.ScheduleState(
                schedule_key=schedule_key, enabled=None, since=since, updated_at=since)
        return self.schedule_states[schedule_key]

    async def list_schedule_states(self) -> builtins.list[base.ScheduleState]:
        return [self.schedule_states[k] for k in sorted(self.schedule_states)]

    async def set_schedule_enabled(self, schedule_key: str, enabled: bool | None) -> base.ScheduleState:
        now = runs_.utcnow()
        old = self.schedule_states.get(schedule_key)
        self.schedule_states[schedule_key] = base.ScheduleState(
            schedule_key=schedule_key, enabled=enabled, since=old.since if old else now, updated_at=now)
        return self.schedule_states[schedule_key]

    async def claim_fire(self, schedule_key: str, fire_time: dt.datetime, *, stale_after: float = 60.0) -> bool:
        now = runs_.utcnow()
        key = (schedule_key, fire_time.astimezone(dt.UTC))
        old = self.fires.get(key)
        if old is not None and (old.run_id is not None or old.created_at >= now - dt.timedelta(seconds=stale_after)):
            return False
        self.fires[key] = base.ScheduleFire(schedule_key=schedule_key, fire_time=key[1], run_id=None, created_at=now)
        return True

    async def set_fire_run(self, schedule_key: str, fire_time: dt.datetime, run_id: str) -> None:
        key = (schedule_key, fire_time.astimezone(dt.UTC))
        old = self.fires.get(key)
        if old is not None:
            self.fires[key] = base.ScheduleFire(schedule_key=schedule_key, fire_time=key[1], run_id=run_id,
                                                created_at=old.created_at)

    async def last_fire_times(self) -> dict[str, dt.datetime]:
        last: dict[str, dt.datetime] = {}
        for schedule_key, fire_time in self.fires:
            if schedule_key not in last or fire_time > last[schedule_key]:
                last[schedule_key] = fire_time
        return last

    async def list_fires(self, schedule_key: str, *, limit: int = 50) -> builtins.list[base.ScheduleFire]:
        found = [f for (key, _), f in self.fires.items() if key == schedule_key]
        return sorted(found, key=lambda f: f.fire_time, reverse=True)[:limit]

    # webhooks ------------------------------------------------------------------------------
    async def accept_delivery(
        self, hook_key: str, delivery_id: str, *, now: dt.datetime, rate_limit: int, keep: float
    ) -> base.HookVerdict:
        seen = self.deliveries.setdefault(hook_key, {})
        horizon = now - dt.timedelta(seconds=max(keep, 60.0))
        for old_id in [d for d, at in seen.items() if at < horizon]:
            del seen[old_id]
        if delivery_id in seen:
            return base.HookVerdict(accepted=False, replayed=True)
        recent = sorted(at for at in seen.values() if at > now - RATE_WINDOW)
        if len(recent) >= rate_limit:
            oldest = recent[len(recent) - rate_limit]
            return base.HookVerdict(accepted=False, retry_after=max(1.0, (oldest + RATE_WINDOW - now).total_seconds()))
        seen[delivery_id] = now
        return base.HookVerdict(accepted=True)
