"""Benchmark: how fast the dispatcher starts queued runs, on SQLite and on PostgreSQL.

    .venv/bin/python bench/dispatch.py [--runs 1000] [--rate 100] [--backends sqlite,postgres]
                                       [--rounds 5] [--baseline REF] [--poll-interval 2]

Each run is a one-stage no-op pipeline on the ``FakeExecutor`` (the attempt ends at once), so
the figures are Kubeline's own cost: claim, driver, store transactions. A real ``Engine`` on a
real ``SqlStore``. Two phases per backend:

- burst: ``--runs`` runs queued before the dispatcher starts. Throughput = runs started per
  second; time to start = run.started_at - dispatcher start (queue position dominates).
- trigger-to-start: the dispatcher is running and runs are submitted at ``--rate`` per second
  (below capacity); latency = run.started_at - run.created_at, p50/p99.

Every figure is the median and spread of ``--rounds`` interleaved rounds (``bench/rounds.py``:
each backend once per round, each in a fresh process on a fresh database; ``--baseline main``
adds the code of another ref, measured the same way in the same invocation). The CPU per run is
this process's CPU time during the burst divided by the runs (the engine's whole cost per run,
store included; PostgreSQL's own CPU is not in it).

PostgreSQL: ``KUBELINE_TEST_POSTGRES_URL`` (a superuser URL) or a throwaway server started as
the integration tests start theirs (``kubeline.testing.postgres``: 127.0.0.1, fsync off).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import pathlib
import statistics
import time
import uuid
from typing import Any

import rounds  # bench/rounds.py

from kubeline.domain import runs, specs, states
from kubeline.engine import engine as engine_
from kubeline.logs import store as log_store
from kubeline.storage.sql import store as sql_store
from kubeline.testing import executors as fake


class NoSecrets:
    async def resolve(self, names: list[str]) -> dict[str, str]:
        return {}

    def decrypt_env(self, encrypted_env: dict[str, str]) -> dict[str, str]:
        return {}


def noop_pipeline() -> runs.Pipeline:
    spec = specs.PipelineSpec.model_validate({"stages": [{"id": "noop", "type": "shell", "command": "true"}]})
    return runs.Pipeline(name="noop", spec=spec, source="api")


async def _all_final(store: sql_store.SqlStore, serving: asyncio.Task[None] | None = None) -> None:
    """Until no run is queued or running (one GROUP BY a poll, so the bench costs the engine little);
    the dispatcher's error if it stopped (else the bench would wait for ever)."""
    while True:
        if serving is not None and serving.done():
            serving.result()
            raise RuntimeError("the dispatcher stopped with runs left")
        counts = await store.count_runs()
        if not counts.get(states.RunState.QUEUED) and not counts.get(states.RunState.RUNNING):
            return
        await asyncio.sleep(0.05)


def _percentile(values: list[float], pct: float) -> float:
    return rounds.percentile(values, pct)


async def measure(url: str, *, count: int, rate: float, work: pathlib.Path,
                  poll_interval: float = 2.0) -> dict[str, Any]:
    store = await sql_store.SqlStore.open(url)
    try:
        pipeline = noop_pipeline()
        await store.upsert_pipeline(pipeline)
        engine = engine_.Engine(store=store, executors={"local": fake.FakeExecutor()},
                                logs=log_store.LogStore(work / f"logs-{uuid.uuid4().hex[:6]}"), secrets=NoSecrets(),
                                max_concurrent_attempts=64, poll_interval=poll_interval)
        # burst
        queued = [await engine.submit(pipeline) for _ in range(count)]
        started = runs.utcnow()
        cpu0, wall0 = time.process_time(), time.perf_counter()
        serving = asyncio.create_task(engine.serve(batch=32))
        await _all_final(store, serving)
        cpu_per_run = (time.process_time() - cpu0) / count
        burst_wall = time.perf_counter() - wall0
        burst = [await store.get_run(r.id) for r in queued]
        starts = [(r.started_at - started).total_seconds() for r in burst if r.started_at]
        burst_rate = len(starts) / max(starts)
        # trigger-to-start at a steady rate
        live: list[runs.Run] = []
        gap = 1.0 / rate
        t0 = time.perf_counter()
        for i in range(count):
            live.append(await engine.submit(pipeline))
            delay = t0 + (i + 1) * gap - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
        await _all_final(store, serving)
        serving.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await serving
        await engine.shutdown()
        done = [await store.get_run(r.id) for r in live]
        latency = [(r.started_at - r.created_at).total_seconds() for r in done if r.started_at]
        ok = sum(r.state is states.RunState.SUCCEEDED for r in burst + done)
        return {"runs": count, "succeeded": ok, "burst_rate": burst_rate, "burst_final_rate": count / burst_wall,
                "burst_p50": _percentile(starts, 50), "burst_p99": _percentile(starts, 99),
                "cpu_per_run": cpu_per_run,
                "p50": _percentile(latency, 50), "p99": _percentile(latency, 99),
                "mean": statistics.fmean(latency)}
    finally:
        await store.close()


FIGURES = [
    rounds.Figure("burst_rate", "burst: runs started/s"),
    rounds.Figure("burst_final_rate", "burst: runs final/s"),
    rounds.Figure("cpu_per_run", "burst: CPU per run", "ms", 2),
    rounds.Figure("p50", "trigger->start p50", "ms"),
    rounds.Figure("p99", "trigger->start p99", "ms"),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=1000)
    parser.add_argument("--rate", type=float, default=100.0, help="submissions per second in phase 2")
    parser.add_argument("--poll-interval", type=float, default=2.0,
                        help="the engine's safety-net poll (default: the server's); wake-ups do the work")
    rounds.add_arguments(parser)
    args = parser.parse_args()
    if rounds.one_round(args, lambda p: asyncio.run(measure(
            p["url"], count=p["runs"], rate=p["rate"], work=pathlib.Path(p["work"]),
            poll_interval=p["poll_interval"]))):
        return
    print(f"{args.runs} no-op runs (FakeExecutor) per phase, phase 2 submitted at {args.rate:g}/s, "
          f"{args.rounds} interleaved rounds; {rounds.machine_line()}", flush=True)
    with rounds.variants(args) as chosen:
        results = rounds.interleave(
            pathlib.Path(__file__), args=args, chosen=chosen,
            params=lambda v, url: {"url": url, "runs": args.runs, "rate": args.rate,
                                   "poll_interval": args.poll_interval},
            show=lambda r: (f"ok {r['succeeded']}/{2 * r['runs']} burst {r['burst_rate']:.0f}/s "
                            f"cpu {r['cpu_per_run'] * 1000:.2f} ms/run p50 {r['p50'] * 1000:.1f} ms "
                            f"p99 {r['p99'] * 1000:.1f} ms"))
    rounds.report(results, FIGURES)
    print(rounds.machine_line())
    bad = [f"{v.label}: {r['succeeded']}/{2 * r['runs']}" for v, rs in results.items() for r in rs
           if r["succeeded"] != 2 * r["runs"]]
    if bad:
        raise SystemExit(f"runs that did not succeed: {bad}")


if __name__ == "__main__":
    main()
