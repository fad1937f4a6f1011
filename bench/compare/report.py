"""Results JSON -> the Markdown section of docs/benchmarks.md (pure, unit-tested)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any


def seconds(value: float) -> str:
    return f"{value:.2f} s" if value >= 1 else f"{value * 1000:.0f} ms"


def millis(value: float) -> str:
    """Milliseconds; a negative transition (the next task queued in the same transaction that ended
    the upstream, stamped a moment earlier) shows as ~0."""
    if value < 0:
        return "~0"
    return f"{value * 1000:.1f}" if abs(value) < 0.1 else f"{value * 1000:.0f}"


def table(results: Sequence[Mapping[str, Any]], *, workloads: Mapping[str, str]) -> str:
    """One row per (workload, engine) with the medians, p95 and the per-task split in ms."""
    head = ("| workload | engine | isolation | run wall, median | p95 | trigger→end, median | p95 "
            "| per task: assignment / execution / transition (ms, medians) | runs |")
    lines = [head, "|" + " --- |" * 9]
    for name, title in workloads.items():
        rows = [r for r in results if r["workload"] == name]
        for r in sorted(rows, key=lambda r: r["summary"]["wall"]["median"] if "summary" in r else float("inf")):
            if "summary" not in r:
                lines.append(f"| {title} | {r['label']} | {r['isolation']} | — | — | — | — "
                             f"| not measured: {r.get('error', 'skipped')} | 0 |")
                continue
            s = r["summary"]
            split = s["split"]
            failed = f" ({s['failed']} failed)" if s["failed"] else ""
            lines.append(
                f"| {title} | {r['label']} | {r['isolation']} | **{seconds(s['wall']['median'])}** "
                f"| {seconds(s['wall']['p95'])} | {seconds(s['end_to_end']['median'])} "
                f"| {seconds(s['end_to_end']['p95'])} | {millis(split['assignment'])} / {millis(split['execution'])}"
                f" / {millis(split['transition'])} | {s['runs']}{failed} |")
    return "\n".join(lines)


def ratios(results: Sequence[Mapping[str, Any]], *, baseline: str) -> dict[str, dict[str, float]]:
    """workload -> engine -> (engine median wall / baseline median wall), for the prose."""
    out: dict[str, dict[str, float]] = {}
    base = {r["workload"]: r["summary"]["wall"]["median"] for r in results
            if r["engine"] == baseline and "summary" in r}
    for r in results:
        if "summary" in r and r["workload"] in base and base[r["workload"]] > 0:
            out.setdefault(r["workload"], {})[r["engine"]] = r["summary"]["wall"]["median"] / base[r["workload"]]
    return out
