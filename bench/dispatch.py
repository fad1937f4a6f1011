"""Benchmark: how fast the dispatcher starts queued runs, on SQLite and on PostgreSQL.

    .venv/bin/python bench/dispatch.py [--runs 1000] [--rate 100] [--backends sqlite,postgres]

Each run is a one-stage no-op pipeline on the ``FakeExecutor`` (the attempt ends at once), so
the figures are Kubeline's own cost: claim, driver, store transactions. A real ``Engine`` on a
real ``SqlStore``. Two phases per backend:

- burst: ``--runs`` runs queued before the dispatcher starts. Throughput = runs started per
  second; time to start = run.started_at - dispatcher start (queue position dominates).
- trigger-to-start: the dispatcher is running and runs are submitted at ``--rate`` per second
  (below capacity); latency = run.started_at - run.created_at, p50/p99.

PostgreSQL: ``KUBELINE_TEST_POSTGRES_URL`` (a superuser URL) or a throwaway server started like
the test fixture does (Debian's postgresql packages, 127.0.0.1, fsync off).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import pathlib
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from typing import Any

from kubeline.domain import runs, specs, states
from kubeline.engine import engine as engine_
from kubeline.logs import store as log_store
from kubeline.storage.sql import store as sql_store
from kubeline.testing import executors as fake

ROOT = pathlib.Path(__file__).resolve().parents[1]


class NoSecrets:
    async def resolve(self, names: list[str]) -> dict[str, str]:
        return {}

    def decrypt_env(self, encrypted_env: dict[str, str]) -> dict[str, str]:
        return {}


def noop_pipeline() -> runs.Pipeline:
    spec = specs.PipelineSpec.model_validate({"stages": [{"id": "noop", "type": "shell", "command": "true"}]})
    return runs.Pipeline(name="noop", spec=spec, source="api")


async def _all_final(store: sql_store.SqlStore, count: int) -> None:
    while True:
        left = await store.list_runs(states_in=[states.RunState.QUEUED, states.RunState.RUNNING], limit=count)
        if not left:
            return
        await asyncio.sleep(0.05)


def _percentile(values: list[float], pct: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(pct / 100 * (len(ordered) - 1)))]


async def measure(url: str, *, count: int, rate: float, work: pathlib.Path) -> dict[str, Any]:
    store = await sql_store.SqlStore.open(url)
    try:
        pipeline = noop_pipeline()
        await store.upsert_pipeline(pipeline)
        engine = engine_.Engine(store=store, executors={"local": fake.FakeExecutor()},
                                logs=log_store.LogStore(work / f"logs-{uuid.uuid4().hex[:6]}"), secrets=NoSecrets(),
                                max_concurrent_attempts=64, poll_interval=0.05)
        # burst
        queued = [await engine.submit(pipeline) for _ in range(count)]
        started = runs.utcnow()
        serving = asyncio.create_task(engine.serve(batch=32))
        await _all_final(store, count)
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
        await _all_final(store, count)
        serving.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await serving
        await engine.shutdown()
        done = [await store.get_run(r.id) for r in live]
        latency = [(r.started_at - r.created_at).total_seconds() for r in done if r.started_at]
        ok = sum(r.state is states.RunState.SUCCEEDED for r in burst + done)
        return {"runs": count, "succeeded": ok, "burst_rate": burst_rate,
                "burst_p50": _percentile(starts, 50), "burst_p99": _percentile(starts, 99),
                "p50": _percentile(latency, 50), "p99": _percentile(latency, 99),
                "mean": statistics.fmean(latency)}
    finally:
        await store.close()


@contextlib.contextmanager
def postgres_database() -> Iterator[str]:
    sys.path.insert(0, str(ROOT / "tests" / "integration"))
    import conftest  # type: ignore[import-not-found]  # the test fixture's PostgreSQL server

    external = os.environ.get("KUBELINE_TEST_POSTGRES_URL")
    with contextlib.ExitStack() as stack:
        if external:
            import sqlalchemy as sa

            parsed = sa.make_url(external)
            server = conftest.PostgresServer(host=parsed.host or "127.0.0.1", port=parsed.port or 5432,
                                             user=parsed.username or "")
        else:
            server = stack.enter_context(conftest._local_server())
        name = f"kubeline_bench_{uuid.uuid4().hex[:8]}"
        server.admin(f"CREATE DATABASE {name}")
        try:
            yield server.url(name)
        finally:
            server.admin(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=1000)
    parser.add_argument("--rate", type=float, default=100.0, help="submissions per second in phase 2")
    parser.add_argument("--backends", default="sqlite,postgres")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="kubeline-bench-") as tmp:
        work = pathlib.Path(tmp)
        for backend in args.backends.split(","):
            if backend == "sqlite":
                url = f"sqlite+aiosqlite:///{work / 'bench.db'}"
                rows.append((backend, asyncio.run(measure(url, count=args.runs, rate=args.rate, work=work))))
            else:
                with postgres_database() as url:
                    rows.append((backend, asyncio.run(measure(url, count=args.runs, rate=args.rate, work=work))))
    print(f"{args.runs} no-op runs (FakeExecutor), phase 2 submitted at {args.rate:g}/s")
    print(f"{'backend':<10} {'ok':>6} {'burst runs/s':>13} {'burst start p50':>16} {'p99':>8} "
          f"{'trigger->start p50':>19} {'p99':>8}")
    for backend, r in rows:
        print(f"{backend:<10} {r['succeeded']:>6} {r['burst_rate']:>13.1f} {r['burst_p50']:>15.2f}s "
              f"{r['burst_p99']:>7.2f}s {r['p50'] * 1000:>17.1f}ms {r['p99'] * 1000:>6.1f}ms")


if __name__ == "__main__":
    main()
