"""Timing arithmetic: timestamps from each engine's store -> run and per-task figures.

Per task: assignment = started - queued (the engine handing the task to a worker), execution =
ended - started, transition = queued - the last upstream's end (the engine noticing the upstream
finished and queueing the next). Roots have no transition. All from the engine's own timestamps.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import math
import statistics
from collections.abc import Mapping, Sequence
from typing import Any


def parse_ts(value: str | dt.datetime | None) -> float | None:
    """A database timestamp (ISO text, naive = UTC, or a datetime) -> POSIX seconds."""
    if value is None or value == "":
        return None
    stamp = value if isinstance(value, dt.datetime) else dt.datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    if stamp.tzinfo is None:
        stamp = stamp.replace(tzinfo=dt.UTC)
    return stamp.timestamp()


def percentile(values: Sequence[float], pct: float) -> float:
    """Nearest-rank percentile (with 5 runs p95 is the slowest run: said so in the report)."""
    if not values:
        raise ValueError("percentile of no values")
    if not 0 <= pct <= 100:
        raise ValueError(f"percentile {pct} is outside 0..100")
    ordered = sorted(values)
    rank = max(1, math.ceil(pct / 100 * len(ordered)))
    return ordered[rank - 1]


def summary(values: Sequence[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "p95": percentile(values, 95), "min": min(values),
            "max": max(values)}


@dataclasses.dataclass(frozen=True, kw_only=True)
class TaskTiming:
    task_id: str
    queued: float
    started: float
    ended: float


def split(tasks: Mapping[str, TaskTiming], graph: Mapping[str, Sequence[str]]) -> dict[str, float]:
    """Median assignment / execution / transition of one run's tasks, in seconds."""
    missing = sorted(set(graph) - set(tasks))
    if missing:
        raise ValueError(f"no timestamps for tasks {', '.join(missing[:5])} (of {len(graph)})")
    assign = [t.started - t.queued for t in tasks.values()]
    execute = [t.ended - t.started for t in tasks.values()]
    transition = [tasks[task_id].queued - max(tasks[u].ended for u in upstream)
                  for task_id, upstream in graph.items() if upstream]
    return {"assignment": statistics.median(assign), "execution": statistics.median(execute),
            "transition": statistics.median(transition) if transition else 0.0}


@dataclasses.dataclass(frozen=True, kw_only=True)
class RunTiming:
    """One run: trigger->end and start->end from the engine, the split, and what the client saw."""

    queued: float
    started: float
    ended: float
    observed: float  # seconds from the bench's trigger call to seeing the run final
    split: dict[str, float]
    state: str

    @property
    def wall(self) -> float:
        return self.ended - self.started

    @property
    def end_to_end(self) -> float:
        return self.ended - self.queued

    def as_dict(self) -> dict[str, Any]:
        return {"queued": self.queued, "started": self.started, "ended": self.ended, "wall": self.wall,
                "end_to_end": self.end_to_end, "observed": self.observed, "split": self.split,
                "state": self.state}


def aggregate(measured: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Measured runs (``RunTiming.as_dict``) -> medians/p95 of wall, end-to-end and the split."""
    if not measured:
        raise ValueError("no measured runs")
    out: dict[str, Any] = {key: summary([r[key] for r in measured]) for key in ("wall", "end_to_end", "observed")}
    out["split"] = {key: statistics.median(r["split"][key] for r in measured)
                    for key in ("assignment", "execution", "transition")}
    out["runs"] = len(measured)
    out["failed"] = sum(r["state"] != "succeeded" for r in measured)
    return out
