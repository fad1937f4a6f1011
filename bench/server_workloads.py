"""Benchmark: ``bench/compare`` workloads through a real ``kubeline server``, local-warm executor.

    .venv/bin/python bench/server_workloads.py [--workloads single,c] [--runs 5] [--executor local-warm]
                                               [--backends sqlite] [--rounds 5] [--baseline REF]

Workloads: ``single`` (one no-op Python stage), and ``bench/compare``'s letters: ``a`` (chain of 40
tasks, fib(10)), ``b`` (chain of 10, fib(33)), ``c`` (fan-out of 100 no-op tasks + join). Each task
is a Python stage on ``--executor`` (``local-warm``: a fork of a warm worker).

Per round (``bench/rounds.py``: a fresh process and database each) one ``kubeline server`` runs on
127.0.0.1 with the workloads as its pipelines folder; per workload one warm-up run (the warm worker
starts), then ``--runs`` runs one after the other, each ``POST /api/v1/runs`` then
``GET /api/v1/runs/{id}`` every 5 ms until it is final, and as many runs, alternating with those,
that wait as ``kubeline.client`` does instead: following the run's event stream (SSE, pushed by
the server) until its end. Figures per workload (the round's median of its runs, then median and
spread over rounds):

- observed: the client's time from sending the POST to seeing the run final (polling; "sse":
  following the events);
- queued -> end: the run's ``finished_at - created_at`` as the server recorded them (the polls
  cost the server CPU too: compare with the SSE runs' figure).

Every run must succeed and every attempt must have run on ``--executor`` (a round that fell back
to another executor fails). Access: the server gets an admin token; requests send it.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import pathlib
import secrets
import statistics
import time
from typing import Any

import api_runs  # bench/api_runs.py: the server processes
import rounds  # bench/rounds.py
from compare import workloads  # bench/compare/workloads.py: the workloads' graphs and pipeline folders

SINGLE = workloads.Workload(name="single", title="single no-op stage", shape="chain", width=1, fib_n=None)


def pick(names: str) -> list[workloads.Workload]:
    chosen: list[workloads.Workload] = []
    for name in (n.strip() for n in names.split(",") if n.strip()):
        chosen.extend([SINGLE] if name == "single" else workloads.pick(name))
    if not chosen:
        raise SystemExit("--workloads is empty: use single, a, b, c (comma-separated)")
    return chosen


def pipeline_name(workload: workloads.Workload, executor: str) -> str:
    return f"{workload.name.replace('_', '-')}-{executor}"  # as workloads.kubeline_pipeline names it


async def run_once(http: Any, name: str, *, sse: bool = False) -> tuple[float, float, dict[str, Any]]:
    """One run through the API: observed seconds, queued -> end seconds, the final run."""
    t0 = time.perf_counter()
    response = await http.post("/api/v1/runs", json={"pipeline": name})
    if response.status_code != 201:
        raise SystemExit(f"POST /api/v1/runs {name}: {response.status_code} {response.text[:500]}")
    run_id = response.json()["id"]
    if sse:  # as kubeline.client's wait(): the run's events until the stream's end, then the run
        async with http.stream("GET", f"/api/v1/runs/{run_id}/events/stream",
                               headers={"Accept": "text/event-stream"}) as stream:
            async for line in stream.aiter_lines():
                if line.strip() == "event: end":
                    break
        observed = time.perf_counter() - t0
        run = (await http.get(f"/api/v1/runs/{run_id}")).json()
        took = (dt.datetime.fromisoformat(run["finished_at"]) - dt.datetime.fromisoformat(run["created_at"]))
        return observed, took.total_seconds(), run
    while True:
        run = (await http.get(f"/api/v1/runs/{run_id}")).json()
        if run["state"] in ("succeeded", "failed", "cancelled"):
            observed = time.perf_counter() - t0
            break
        await asyncio.sleep(0.005)
    took = (dt.datetime.fromisoformat(run["finished_at"]) - dt.datetime.fromisoformat(run["created_at"]))
    return observed, took.total_seconds(), run


async def drive(base: str, *, token: str, chosen: list[workloads.Workload], executor: str,
                runs: int) -> dict[str, Any]:
    import httpx

    figures: dict[str, Any] = {}
    async with httpx.AsyncClient(base_url=base, headers={"Authorization": f"Bearer {token}"}, timeout=120) as http:
        for workload in chosen:
            name = pipeline_name(workload, executor)
            await run_once(http, name)  # warm-up: the warm worker starts
            observed: dict[bool, list[float]] = {False: [], True: []}
            server: dict[bool, list[float]] = {False: [], True: []}
            used: set[str] = set()
            states: list[str] = []
            for _ in range(runs):
                for sse in (False, True):
                    seen, took, run = await run_once(http, name, sse=sse)
                    observed[sse].append(seen)
                    server[sse].append(took)
                    states.append(run["state"])
                    used.update(a["executor"] for a in run.get("attempts") or [])
            if set(states) != {"succeeded"} or used != {executor}:
                raise SystemExit(f"{workload.name}: runs {states}, executors used {sorted(used)} "
                                 f"(expected all succeeded on {executor})")
            figures[f"{workload.name}_observed"] = statistics.median(observed[False])
            figures[f"{workload.name}_server"] = statistics.median(server[False])
            figures[f"{workload.name}_observed_sse"] = statistics.median(observed[True])
            figures[f"{workload.name}_server_sse"] = statistics.median(server[True])
    return figures


def measure(p: dict[str, Any]) -> dict[str, Any]:
    work = pathlib.Path(p["work"]) / f"workloads-{secrets.token_hex(3)}"
    chosen = pick(p["workloads"])
    root = work / "pipelines"
    for workload in chosen:
        workloads.kubeline_pipeline(root, workload, executor=p["executor"])
    token = secrets.token_urlsafe(24)
    with api_runs.servers(p["url"], count=1, work=work, token=token, pipelines=root) as [base]:
        return asyncio.run(drive(base, token=token, chosen=chosen, executor=p["executor"], runs=p["runs"]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workloads", default="single,c", help="single, a, b, c (comma-separated)")
    parser.add_argument("--runs", type=int, default=5, help="measured runs per workload and round")
    parser.add_argument("--executor", default="local-warm", choices=["local-warm", "local"])
    rounds.add_arguments(parser, backends="sqlite")
    args = parser.parse_args()
    if rounds.one_round(args, measure):
        return
    chosen = pick(args.workloads)
    figures = [f for w in chosen for f in (
        rounds.Figure(f"{w.name}_observed", f"{w.name}: observed (s)", "", 3),
        rounds.Figure(f"{w.name}_server", f"{w.name}: queued->end (s)", "", 3),
        rounds.Figure(f"{w.name}_observed_sse", f"{w.name}: observed, sse (s)", "", 3),
        rounds.Figure(f"{w.name}_server_sse", f"{w.name}: queued->end, sse (s)", "", 3))]
    print(f"{', '.join(w.title for w in chosen)}: through one `kubeline server` ({args.executor}), 1 warm-up + "
          f"{args.runs} runs each per round (median of the round), {args.rounds} interleaved rounds; "
          f"{rounds.machine_line()}", flush=True)
    with rounds.variants(args) as variants:
        results = rounds.interleave(
            pathlib.Path(__file__), args=args, chosen=variants,
            params=lambda v, url: {"url": url, "workloads": args.workloads, "runs": args.runs,
                                   "executor": args.executor},
            show=lambda r: " ".join(f"{f.key} {float(r[f.key]):.3f}s" for f in figures))
    rounds.report(results, figures)
    print(rounds.machine_line())


if __name__ == "__main__":
    main()
