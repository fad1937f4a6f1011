"""When schedules fire: pure functions of (``ScheduleSpec``, a time), no clock, no storage.

Every replica computes the same fire times from the same spec, so the unique
(schedule, fire time) key in the store is enough to make each fire happen once.

Rules (all results are aware UTC datetimes):

- **cron** follows the wall clock of the schedule's ``timezone``: every local wall time that
  matches the expression fires once.
  *Spring forward*: a wall time that does not exist that day (02:30 when clocks jump from 02:00
  to 03:00) fires once, at the instant it names with the offset in force before the change
  (02:30 CET = 03:30 CEST). If another matching wall time names the same instant, it fires once.
  *Fall back*: a wall time that happens twice (02:30 when clocks go from 03:00 back to 02:00)
  fires once, at its first occurrence (summer time).
- **interval** fires at ``anchor + k * interval``, the anchor being ``start`` or the Unix epoch,
  so the grid is the same in every process and across restarts.
- **at** fires once.
- ``start``/``end`` bound every kind (inclusive); naive ``at``/``start``/``end`` are read in the
  schedule's time zone.
- **catch-up** after downtime (:func:`due`): fires no older than ``grace`` are on time;
  ``none`` keeps only those, ``latest`` the most recent fire since the last one, ``all`` every
  missed fire, the newest ``catchup_limit`` of them.
"""

from __future__ import annotations

import datetime as dt
import math
import zoneinfo
from collections.abc import Iterator

import croniter

from kubeline.domain import specs

EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
# Wider than any daylight-saving gap in use, so a skipped wall time is never missed.
DST_MARGIN = dt.timedelta(hours=3)
DEFAULT_GRACE = dt.timedelta(seconds=60)
# Look-back windows tried in turn when searching for missed fires (cheap for frequent crons).
_LOOKBACKS = (dt.timedelta(hours=1), dt.timedelta(days=1), dt.timedelta(days=32), dt.timedelta(days=367))


def zone(spec: specs.ScheduleSpec) -> zoneinfo.ZoneInfo:
    return zoneinfo.ZoneInfo(spec.timezone)


def _aware(value: dt.datetime, tz: dt.tzinfo) -> dt.datetime:
    return (value.replace(tzinfo=tz) if value.tzinfo is None else value).astimezone(dt.UTC)


def _wall_to_utc(wall: dt.datetime, tz: dt.tzinfo) -> dt.datetime:
    """A naive local wall time to UTC: fold=0 (first occurrence; pre-change offset in a gap)."""
    return wall.replace(tzinfo=tz, fold=0).astimezone(dt.UTC)


def _local(moment: dt.datetime, tz: dt.tzinfo) -> dt.datetime:
    return moment.astimezone(tz).replace(tzinfo=None)


def window(spec: specs.ScheduleSpec) -> tuple[dt.datetime | None, dt.datetime | None]:
    tz = zone(spec)
    start = _aware(spec.start, tz) if spec.start else None
    end = _aware(spec.end, tz) if spec.end else None
    return start, end


def _next_cron(expression: str, tz: dt.tzinfo, after: dt.datetime) -> dt.datetime:
    """The first cron fire strictly after ``after`` (see the DST rules in the module docstring)."""
    it = croniter.croniter(expression, _local(after, tz) - DST_MARGIN)
    best: dt.datetime | None = None
    while True:
        wall = it.get_next(dt.datetime)
        moment = _wall_to_utc(wall, tz)
        if moment > after and (best is None or moment < best):
            best = moment
        if best is not None and wall > _local(best, tz) + DST_MARGIN:
            return best


def _next_unbounded(spec: specs.ScheduleSpec, after: dt.datetime) -> dt.datetime | None:
    tz = zone(spec)
    if spec.at is not None:
        at = _aware(spec.at, tz)
        return at if at > after else None
    if spec.interval is not None:
        anchor = window(spec)[0] or EPOCH
        step = spec.interval
        k = max(0, math.floor((after - anchor).total_seconds() / step) + 1)
        moment = anchor + dt.timedelta(seconds=k * step)
        while moment <= after:  # float rounding
            k += 1
            moment = anchor + dt.timedelta(seconds=k * step)
        return moment
    assert spec.cron is not None
    return _next_cron(spec.cron, tz, after)


def next_fire(spec: specs.ScheduleSpec, after: dt.datetime) -> dt.datetime | None:
    """The first fire strictly after ``after`` inside the start/end window, or None (no more)."""
    after = _aware(after, dt.UTC)
    start, end = window(spec)
    if start is not None and after < start:
        after = start - dt.timedelta(microseconds=1)
    moment = _next_unbounded(spec, after)
    if moment is None or (end is not None and moment > end):
        return None
    return moment


def fires(spec: specs.ScheduleSpec, *, after: dt.datetime, until: dt.datetime) -> Iterator[dt.datetime]:
    """Every fire in ``(after, until]``, oldest first."""
    moment = next_fire(spec, after)
    while moment is not None and moment <= until:
        yield moment
        moment = next_fire(spec, moment)


def next_fires(spec: specs.ScheduleSpec, *, after: dt.datetime, count: int) -> list[dt.datetime]:
    """The next ``count`` fires after ``after`` (for listings)."""
    found: list[dt.datetime] = []
    moment = next_fire(spec, after)
    while moment is not None and len(found) < count:
        found.append(moment)
        moment = next_fire(spec, moment)
    return found


def _recent(spec: specs.ScheduleSpec, *, since: dt.datetime, now: dt.datetime, want: int) -> list[dt.datetime]:
    """The newest ``want`` fires in ``(since, now]``, searching short windows first."""
    for lookback in (*_LOOKBACKS, now - since):
        start = max(since, now - lookback)
        found = list(fires(spec, after=start, until=now))
        if len(found) >= want or start == since:
            return found[-want:]
    return []  # pragma: no cover - the last window always starts at since


def due(
    spec: specs.ScheduleSpec,
    *,
    since: dt.datetime,
    now: dt.datetime,
    grace: dt.timedelta = DEFAULT_GRACE,
) -> list[dt.datetime]:
    """Fires to make now, oldest first: those in ``(since, now]`` after the catch-up policy.

    ``since`` is the last recorded fire (or when the schedule was first seen); fires no older
    than ``grace`` are on time, older ones were missed (the scheduler was down).
    """
    since, now = _aware(since, dt.UTC), _aware(now, dt.UTC)
    if now <= since:
        return []
    on_time_from = max(since, now - grace)
    on_time = list(fires(spec, after=on_time_from, until=now))
    if spec.catchup is specs.CatchUp.NONE or on_time_from == since:
        return on_time if spec.catchup is not specs.CatchUp.LATEST else on_time[-1:]
    if spec.catchup is specs.CatchUp.LATEST:
        return on_time[-1:] or _recent(spec, since=since, now=now, want=1)
    missed = _recent(spec, since=since, now=on_time_from, want=spec.catchup_limit)
    return [*missed, *on_time][-max(spec.catchup_limit, len(on_time)):]


def describe_trigger(schedule_id: str, fire_time: dt.datetime) -> str:
    """``triggered_by.detail`` of a scheduled run: the schedule id and the fire time (UTC)."""
    return f"{schedule_id}@{fire_time.astimezone(dt.UTC).isoformat().replace('+00:00', 'Z')}"
