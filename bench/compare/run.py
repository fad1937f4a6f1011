"""Kubeline, Apache Airflow 3 and Prefect 3 on the same workloads, same machine, same run.

    .venv/bin/python bench/compare/run.py [--engines all] [--workloads all] [--runs 5] [--warmup 1]

Makes the peers' virtualenvs (once) under ~/.cache/kubeline/bench, starts each engine's server on
127.0.0.1 with its embedded SQLite, runs 1 warm-up + N measured runs of each workload through the
engine's scheduler, stops the server's process group, and writes results/<stamp>.json (+ latest.json,
merged by (engine, workload) so a partial rerun updates only what it measured), docs/benchmarks.md
and docs/benchmarks.png. Engines: kubeline-local, kubeline-local-warm, prefect, airflow.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import pathlib
import platform
import shutil
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from typing import Any

HERE = pathlib.Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(HERE.parent))

from compare import document, venvs, workloads  # noqa: E402

ENGINES = ["kubeline-local", "kubeline-local-warm", "prefect", "airflow"]


def machine() -> dict[str, Any]:
    cpu = next((line.split(":", 1)[1].strip() for line in pathlib.Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    mem = next((int(line.split()[1]) // 1024 // 1024 for line in pathlib.Path("/proc/meminfo").read_text().splitlines()
                if line.startswith("MemTotal")), 0)
    cores = os.cpu_count() or 0
    return {"load_average": [round(x, 2) for x in os.getloadavg()],
            "cpu": cpu, "cores": cores, "memory_gib": mem, "python": platform.python_version(),
            "os": f"{platform.system()} {platform.release()}",
            "summary": f"{cores} cores ({cpu}), {mem} GiB, Python {platform.python_version()}"}


def make_engine(name: str, *, cache: pathlib.Path, work: pathlib.Path, chosen: list[workloads.Workload],
                python: str) -> Any:
    if name.startswith("kubeline-"):
        from compare import kubeline_engine

        return kubeline_engine.KubelineEngine(executor=name.removeprefix("kubeline-"), work=work, chosen=chosen)
    venv = venvs.ensure(name, cache=cache, python=python)
    (HERE / "results" / f"freeze-{name}.txt").write_text(venvs.freeze(venv))
    if name == "prefect":
        from compare import prefect_engine

        return prefect_engine.PrefectEngine(venv=venv, work=work, chosen=chosen)
    from compare import airflow_engine

    return airflow_engine.AirflowEngine(venv=venv, work=work, chosen=chosen)


def measure(engine: Any, chosen: list[workloads.Workload], *, runs: int, warmup: int, timeout: float,
            checkpoint: Callable[[list[dict[str, Any]]], object]) -> list[dict[str, Any]]:
    from compare import stats

    out = []
    for w in chosen:
        row: dict[str, Any] = {"engine": engine.name, "label": engine.label, "isolation": engine.isolation,
                               "workload": w.name}
        measured: list[dict[str, Any]] = []
        try:
            for i in range(warmup):
                first = engine.run(w, timeout=timeout)
                print(f"  {engine.name} {w.name} warm-up {i + 1}: wall {first.wall:.3f}s ({first.state})", flush=True)
            for i in range(runs):
                timing = engine.run(w, timeout=timeout)
                measured.append(timing.as_dict())
                print(f"  {engine.name} {w.name} run {i + 1}/{runs}: wall {timing.wall:.3f}s "
                      f"trigger->end {timing.end_to_end:.3f}s split {timing.split} ({timing.state})", flush=True)
        except Exception as exc:  # one workload failing must not lose the others' figures
            traceback.print_exc()
            row["error"] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}"
        if measured:  # runs measured before an error still count (the error is kept beside them)
            row["measured"] = measured
            row["summary"] = stats.aggregate(measured)
        if engine.name.startswith("kubeline"):
            row["executors_configured"] = engine.configured
            row["executors_used"] = sorted(engine.used_executors)
        out.append(row)
        checkpoint(out)
    return out


def merge(previous: list[dict[str, Any]], new: list[dict[str, Any]]) -> list[dict[str, Any]]:
    fresh = {(r["engine"], r["workload"]) for r in new}
    return [r for r in previous if (r["engine"], r["workload"]) not in fresh] + new


def save(new: list[dict[str, Any]], *, previous: list[dict[str, Any]], stamp: str, args: argparse.Namespace,
         began: float) -> dict[str, Any]:
    """Write this invocation's results and the merged latest.json (after every engine: a stopped
    benchmark keeps what it measured)."""
    data = {"stamp": stamp, "machine": machine(), "runs": args.runs, "warmup": args.warmup,
            "wall_seconds": time.monotonic() - began,
            "workloads": {w.name: w.title for w in workloads.WORKLOADS.values()},
            "results": merge(previous, new)}
    latest = HERE / "results" / "latest.json"
    if not new and latest.exists():  # nothing measured (--docs-only): keep the measuring run's machine facts
        kept = json.loads(latest.read_text())
        data.update({key: kept[key] for key in ("stamp", "machine", "wall_seconds") if key in kept})
    if new:
        (HERE / "results" / f"{stamp}.json").write_text(json.dumps({**data, "results": new}, indent=1))
    (HERE / "results" / "latest.json").write_text(json.dumps(data, indent=1))
    return data


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--engines", default="all", help=f"comma list of {', '.join(ENGINES)} (or all)")
    parser.add_argument("--workloads", default="all", help="comma list of a, b, c (or names, or all)")
    parser.add_argument("--runs", type=int, default=5, help="measured runs per workload")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds per run before it counts as failed")
    parser.add_argument("--cache-dir", type=pathlib.Path, default=pathlib.Path.home() / ".cache/kubeline/bench")
    parser.add_argument("--fresh", action="store_true", help="do not merge with results/latest.json")
    parser.add_argument("--no-docs", action="store_true", help="write results only (not docs/benchmarks.*)")
    parser.add_argument("--docs-only", action="store_true", help="measure nothing: redo docs from latest.json")
    args = parser.parse_args()
    engines = ENGINES if args.engines == "all" else [e.strip() for e in args.engines.split(",") if e.strip()]
    unknown = sorted(set(engines) - set(ENGINES))
    if unknown or args.runs < 1:
        raise SystemExit(f"unknown engines {unknown} (use {', '.join(ENGINES)}) or --runs < 1")
    chosen = workloads.pick(args.workloads)
    if args.docs_only:
        engines = []
    cache = args.cache_dir.expanduser().resolve()
    python = shutil.which(f"python{sys.version_info.major}.{sys.version_info.minor}") or sys.executable
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    results_dir = HERE / "results"
    results_dir.mkdir(exist_ok=True)
    began = time.monotonic()
    latest = results_dir / "latest.json"
    previous = [] if args.fresh or not latest.exists() else json.loads(latest.read_text())["results"]
    new: list[dict[str, Any]] = []
    data = save(new, previous=previous, stamp=stamp, args=args, began=began)
    for name in engines:
        work = cache / "work" / f"{stamp}-{name}"
        work.mkdir(parents=True)
        print(f"== {name} (work dir {work})", flush=True)
        started = time.monotonic()
        try:
            with make_engine(name, cache=cache, work=work, chosen=chosen, python=python) as engine:
                print(f"  ready after {time.monotonic() - started:.1f}s", flush=True)
                done = list(new)
                new += [{**row, "stamp": stamp} for row in measure(
                    engine, chosen, runs=args.runs, warmup=args.warmup, timeout=args.timeout,
                    checkpoint=lambda rows, done=done: save(done + rows, previous=previous, stamp=stamp,
                                                            args=args, began=began))]
        except Exception as exc:
            traceback.print_exc()
            new += [{"engine": name, "label": name, "isolation": "", "workload": w.name,
                     "error": f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}"} for w in chosen]
        print(f"== {name}: {time.monotonic() - started:.0f}s", flush=True)
        data = save(new, previous=previous, stamp=stamp, args=args, began=began)
    if not args.no_docs:
        (ROOT / "docs" / "benchmarks.md").write_text(document.render(data))
        plot = venvs.ensure("plot", cache=cache, python=python)
        subprocess.run([str(plot / "bin" / "python"), str(HERE / "plot.py"), str(latest),
                        str(ROOT / "docs" / "benchmarks.png")], check=True, timeout=300)
    print(f"done in {time.monotonic() - began:.0f}s: {latest}", flush=True)


if __name__ == "__main__":
    main()
