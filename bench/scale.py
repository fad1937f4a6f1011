"""Benchmark at scale: 10,000 queued runs dispatched to the end on SQLite and PostgreSQL, and the
API's list-runs latency over 1,000,000 run rows in PostgreSQL.

    .venv/bin/python bench/scale.py [--runs 10000] [--rows 1000000] [--backends sqlite,postgres]
                                    [--requests 300] [--skip-list]

Phase 1 (each backend): ``--runs`` one-stage no-op runs are queued first (through
``Engine.submit``, timed separately), then one ``Engine.serve`` dispatcher drives them all to
the end. The stage runs on the ``FakeExecutor`` (the attempt ends at once), so the figure is
Kubeline's own cost per run: claim with lease, driver, 4-5 store transactions, log sink,
events. Reported: queueing rate, wall time until every run is final, runs finished per
second, and queue-to-finish time p50/p99 (run.finished_at - dispatcher start).

Phase 2 (PostgreSQL): ``--rows`` run rows made like ``storage.sql.rows.run_to_row`` does and
loaded with ``COPY`` (100 pipelines, over 30 days, mostly succeeded), ``ANALYZE``, then the real
FastAPI app (``api.create_app`` over ``bootstrap.open_kubeline``) is called in process through
``httpx.ASGITransport`` (no network): ``GET /api/v1/runs`` newest first, filtered by pipeline,
by state, and the page after a cursor; ``--requests`` each, p50/p99/max.

PostgreSQL: ``KUBELINE_TEST_POSTGRES_URL`` (a superuser URL) or a throwaway server started like
the integration tests do (``kubeline.testing.postgres``: 127.0.0.1, fsync off).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import json
import os
import pathlib
import random
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from typing import Any

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import dispatch  # bench/dispatch.py: fixtures shared with this benchmark

from kubeline.domain import runs, specs, states
from kubeline.engine import engine as engine_
from kubeline.logs import store as log_store
from kubeline.storage.sql import rows as sql_rows
from kubeline.storage.sql import store as sql_store
from kubeline.storage.sql import tables
from kubeline.testing import executors as fake

R = states.RunState


async def _until_all_final(store: sql_store.SqlStore) -> None:
    while await store.list_runs(states_in=[R.QUEUED, R.RUNNING], limit=1):  # noqa: ASYNC110 - other processes may finish runs
        await asyncio.sleep(0.1)


async def dispatch_phase(url: str, *, count: int, work: pathlib.Path) -> dict[str, Any]:
    store = await sql_store.SqlStore.open(url)
    try:
        pipeline = dispatch.noop_pipeline()
        await store.upsert_pipeline(pipeline)
        engine = engine_.Engine(store=store, executors={"local": fake.FakeExecutor()},
                                logs=log_store.LogStore(work / f"logs-{uuid.uuid4().hex[:6]}"),
                                secrets=dispatch.NoSecrets(), max_concurrent_attempts=64,
                                poll_interval=0.05)
        t0 = time.perf_counter()
        queued = [(await engine.submit(pipeline)).id for _ in range(count)]
        queue_seconds = time.perf_counter() - t0
        started = runs.utcnow()
        t1 = time.perf_counter()
        serving = asyncio.create_task(engine.serve(batch=32))
        await _until_all_final(store)
        wall = time.perf_counter() - t1
        serving.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await serving
        await engine.shutdown()
        finished = [await store.get_run(run_id) for run_id in queued]
        ends = [(r.finished_at - started).total_seconds() for r in finished if r.finished_at]
        return {"runs": count, "succeeded": sum(r.state is R.SUCCEEDED for r in finished),
                "queue_rate": count / queue_seconds, "wall": wall, "rate": count / wall,
                "p50": dispatch._percentile(ends, 50), "p99": dispatch._percentile(ends, 99)}
    finally:
        await store.close()


def seed_runs(url: str, *, count: int, pipelines: int = 100) -> float:
    """COPY ``count`` finished runs into ``runs`` (same column values as ``run_to_row``)."""
    import psycopg
    import sqlalchemy as sa

    parsed = sa.make_url(url)
    spec = specs.PipelineSpec.model_validate({"stages": [{"id": "noop", "type": "shell", "command": "true"}]})
    template = sql_rows.run_to_row(runs.Run(id="x", pipeline="p", spec=spec))
    columns = [c.name for c in tables.runs.columns]
    json_columns = {c.name for c in tables.runs.columns if isinstance(c.type, sa.JSON)}
    spec_json = json.dumps(template["spec"])
    rng = random.Random(6)
    now_ms = int(time.time() * 1000)
    span_ms = 30 * 24 * 3600 * 1000
    step = span_ms / count
    t0 = time.perf_counter()
    with psycopg.connect(host=parsed.host, port=parsed.port, user=parsed.username, dbname=parsed.database,
                         password=parsed.password) as conn, conn.cursor() as cur:
        with cur.copy(f"COPY runs ({', '.join(columns)}) FROM STDIN") as copy:
            for i in range(count):
                ms = now_ms - span_ms + int(i * step)
                created = dt.datetime.fromtimestamp(ms / 1000, dt.UTC)
                roll = rng.random()
                state = R.SUCCEEDED if roll < 0.9 else R.FAILED if roll < 0.99 else R.CANCELLED
                row = {**template, "id": f"{ms:012x}{rng.getrandbits(40):010x}",
                       "pipeline": f"pipeline-{i % pipelines:03d}", "state": state.value,
                       "created_at": created, "started_at": created,
                       "finished_at": created + dt.timedelta(seconds=rng.uniform(0.1, 60)),
                       "error": "" if state is R.SUCCEEDED else f"stage 'noop' {state.value}",
                       "executor": "local"}
                copy.write_row([spec_json if name == "spec" else
                                json.dumps(row[name]) if name in json_columns else row[name]
                                for name in columns])
        conn.commit()
        cur.execute("ANALYZE runs")
        conn.commit()
    return time.perf_counter() - t0


async def list_phase(url: str, *, requests: int, work: pathlib.Path) -> dict[str, dict[str, float]]:
    import httpx

    from kubeline import bootstrap, settings
    from kubeline.api import app as api_app

    config = settings.Settings(home=work / "api-home", database_url=url)
    async with bootstrap.open_kubeline(config) as kl:
        app = api_app.create_app(kl)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://kubeline.test") as client:
            first = (await client.get("/api/v1/runs", params={"limit": 50})).json()
            queries = {
                "newest 50": {"limit": 50},
                "pipeline, 50": {"pipeline": "pipeline-042", "limit": 50},
                "state=failed, 50": {"state": "failed", "limit": 50},
                "page 2 (cursor)": {"limit": 50, "cursor": first.get("next") or ""},
            }
            results = {}
            for label, params in queries.items():
                for _ in range(5):  # warm caches and the connection pool
                    (await client.get("/api/v1/runs", params=params)).raise_for_status()
                took = []
                for _ in range(requests):
                    t = time.perf_counter()
                    response = await client.get("/api/v1/runs", params=params)
                    took.append(time.perf_counter() - t)
                    response.raise_for_status()
                assert len(response.json()["items"]) == 50, label
                results[label] = {"p50": dispatch._percentile(took, 50), "p99": dispatch._percentile(took, 99),
                                  "max": max(took)}
            return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10_000)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--backends", default="sqlite,postgres")
    parser.add_argument("--skip-list", action="store_true", help="only phase 1")
    args = parser.parse_args()
    print(f"load average at start: {os.getloadavg()[0]:.2f} ({os.cpu_count()} CPUs)", flush=True)
    results: list[tuple[str, dict[str, Any]]] = []
    listing: dict[str, dict[str, float]] = {}
    seed_seconds = 0.0
    with tempfile.TemporaryDirectory(prefix="kubeline-scale-") as tmp:
        work = pathlib.Path(tmp)
        for backend in args.backends.split(","):
            if backend == "sqlite":
                url = f"sqlite+aiosqlite:///{work / 'scale.db'}"
                results.append((backend, asyncio.run(dispatch_phase(url, count=args.runs, work=work))))
            elif backend == "postgres":
                with _pg_database() as url:
                    results.append((backend, asyncio.run(dispatch_phase(url, count=args.runs, work=work))))
                if not args.skip_list:
                    with _pg_database() as url:
                        asyncio.run(_migrate(url))
                        seed_seconds = seed_runs(url, count=args.rows)
                        listing = asyncio.run(list_phase(url, requests=args.requests, work=work))
            else:
                parser.error(f"unknown backend {backend!r} (sqlite, postgres)")
            print(f"{backend}: done", flush=True)
    print(f"\n{args.runs} queued one-stage no-op runs (FakeExecutor), one dispatcher, 64 runs at once")
    print(f"{'backend':<10} {'ok':>6} {'queued/s':>9} {'all final':>10} {'runs/s':>8} "
          f"{'queue->final p50':>17} {'p99':>8}")
    for backend, r in results:
        print(f"{backend:<10} {r['succeeded']:>6} {r['queue_rate']:>9.0f} {r['wall']:>9.1f}s {r['rate']:>8.0f} "
              f"{r['p50']:>16.1f}s {r['p99']:>7.1f}s")
    if listing:
        print(f"\nGET /api/v1/runs over {args.rows:,} run rows in PostgreSQL (seeded by COPY in "
              f"{seed_seconds:.0f}s), {args.requests} requests each, in-process ASGI")
        print(f"{'query':<18} {'p50':>8} {'p99':>8} {'max':>8}")
        for label, r in listing.items():
            print(f"{label:<18} {r['p50'] * 1000:>6.1f}ms {r['p99'] * 1000:>6.1f}ms {r['max'] * 1000:>6.1f}ms")


@contextlib.contextmanager
def _pg_database() -> Iterator[str]:
    from kubeline.testing import postgres

    with postgres.server() as server, server.database(prefix="kubeline_bench") as url:
        yield url


async def _migrate(url: str) -> None:
    store = await sql_store.SqlStore.open(url)  # creates/migrates the schema
    await store.close()


if __name__ == "__main__":
    main()
