"""Benchmark at scale, on SQLite and PostgreSQL, median and spread over interleaved rounds.

    .venv/bin/python bench/scale.py [--runs 10000] [--blocked 100000] [--requests 100]
                                    [--backends sqlite,postgres] [--rounds 5] [--baseline REF]
                                    [--rows 1000000 --list-requests 300]

Per round and backend (``bench/rounds.py``: a fresh process and database each):

- drain: ``--runs`` one-stage no-op runs queued (``Engine.submit``), then one ``Engine.serve``
  dispatcher (64 runs at once, ``FakeExecutor``: the attempt ends at once) drives them all to the
  end: runs final per second, queue-to-final p50/p99 (run.finished_at - dispatcher start).
- backlog: ``--blocked`` queued runs of a ``maxInstances: 1`` pipeline behind one running run of
  it (inserted directly), then one run of another pipeline is submitted to a serving
  dispatcher: its trigger-to-start time. Then ``--requests`` ``GET /metrics`` through the real
  app (``api.create_app`` over ``bootstrap.open_kubeline``, in-process ASGI): p50/p99, with the
  queue depth checked.

``--rows`` (PostgreSQL, once, outside the rounds): that many run rows made like
``storage.sql.rows.run_to_row`` and loaded with ``COPY`` (100 pipelines, over 30 days),
``ANALYZE``, then ``GET /api/v1/runs`` newest first, by pipeline, by state and after a cursor.

PostgreSQL: ``KUBELINE_TEST_POSTGRES_URL`` (a superuser URL) or a throwaway server started like
the integration tests do (``kubeline.testing.postgres``: 127.0.0.1, fsync off).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import json
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
import rounds  # bench/rounds.py
import sqlalchemy as sa

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

    from kubeline import bootstrap, settings, testing
    from kubeline.api import app as api_app

    config = settings.Settings(home=work / "api-home", database_url=url)
    async with bootstrap.open_kubeline(config) as kl:
        app = api_app.create_app(kl)
        transport = httpx.ASGITransport(app=app)
        headers = await testing.admin_headers(kl)
        async with httpx.AsyncClient(transport=transport, base_url="http://kubeline.test", headers=headers) as client:
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


async def backlog_phase(url: str, *, blocked: int, requests: int, work: pathlib.Path) -> dict[str, Any]:
    """``blocked`` queued runs of a ``max_instances: 1`` pipeline behind one running run of it:
    how soon one run of another pipeline starts (dispatcher serving), then ``/metrics`` latency
    with all of them queued (``--requests`` scrapes through the real app, in-process ASGI)."""
    import httpx

    from kubeline import bootstrap, settings
    from kubeline.api import app as api_app

    spec = specs.PipelineSpec.model_validate({"max_instances": 1, "stages": [
        {"id": "noop", "type": "shell", "command": "true"}]})
    store = await sql_store.SqlStore.open(url)
    try:
        await store.upsert_pipeline(runs.Pipeline(name="blocked", spec=spec, source="api"))
        template = sql_rows.run_to_row(runs.Run(id="x", pipeline="blocked", spec=spec))
        holder = {**template, "id": runs.new_id(), "state": R.RUNNING.value, "owner": "elsewhere",
                  "lease_expires_at": runs.utcnow() + dt.timedelta(hours=1), "started_at": runs.utcnow()}
        t0 = time.perf_counter()
        for at in range(0, blocked, 5000):
            rows = [{**template, "id": runs.new_id()} for _ in range(min(5000, blocked - at))]
            await store.database.run(lambda conn, rows=rows: conn.execute(sa.insert(tables.runs), rows), write=True)
        await store.database.run(lambda conn: conn.execute(sa.insert(tables.runs), [holder]), write=True)
        seed_seconds = time.perf_counter() - t0
        free = dispatch.noop_pipeline()
        await store.upsert_pipeline(free)
        engine = engine_.Engine(store=store, executors={"local": fake.FakeExecutor()},
                                logs=log_store.LogStore(work / f"logs-{uuid.uuid4().hex[:6]}"),
                                secrets=dispatch.NoSecrets(), max_concurrent_attempts=64)
        serving = asyncio.create_task(engine.serve(batch=32))
        await asyncio.sleep(0.5)  # the dispatcher looked once and found nothing it may start
        run = await engine.submit(free)
        while (await store.get_run(run.id)).started_at is None:  # noqa: ASYNC110 - read from the store
            await asyncio.sleep(0.002)
        started = await store.get_run(run.id)
        assert started.started_at is not None
        free_start = (started.started_at - started.created_at).total_seconds()
        serving.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await serving
        await engine.shutdown()
    finally:
        await store.close()
    config = settings.Settings(home=work / f"api-home-{uuid.uuid4().hex[:6]}", database_url=url)
    took = []
    async with bootstrap.open_kubeline(config) as kl:
        transport = httpx.ASGITransport(app=api_app.create_app(kl))
        async with httpx.AsyncClient(transport=transport, base_url="http://kubeline.test") as client:
            for _ in range(3):
                (await client.get("/metrics")).raise_for_status()
            for _ in range(requests):
                t = time.perf_counter()
                response = await client.get("/metrics")
                took.append(time.perf_counter() - t)
                response.raise_for_status()
    depth = next(line for line in response.text.splitlines() if line.startswith("kubeline_queue_depth"))
    assert float(depth.split()[-1]) == blocked, depth
    return {"blocked": blocked, "seed_seconds": seed_seconds, "free_start": free_start,
            "metrics_p50": dispatch._percentile(took, 50), "metrics_p99": dispatch._percentile(took, 99)}


def measure(p: dict[str, Any]) -> dict[str, Any]:
    work = pathlib.Path(p["work"])
    figures: dict[str, Any] = {}
    if p["runs"]:
        figures.update(asyncio.run(dispatch_phase(p["url"], count=p["runs"], work=work)))
    if p["blocked"]:
        figures.update(asyncio.run(backlog_phase(p["url"], blocked=p["blocked"], requests=p["requests"],
                                                 work=work)))
    return figures


FIGURES = [
    rounds.Figure("rate", "drain: runs final/s"),
    rounds.Figure("p99", "drain: queue->final p99 (s)", "", 1),
    rounds.Figure("free_start", "free run behind backlog", "ms"),
    rounds.Figure("metrics_p50", "/metrics p50", "ms"),
    rounds.Figure("metrics_p99", "/metrics p99", "ms"),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10_000, help="queued runs drained (0: skip)")
    parser.add_argument("--blocked", type=int, default=100_000,
                        help="queued runs behind a max_instances: 1 holder, for the free-run start and /metrics")
    parser.add_argument("--requests", type=int, default=100, help="/metrics scrapes per round")
    parser.add_argument("--rows", type=int, default=0,
                        help="also GET /api/v1/runs over this many COPY-seeded rows (PostgreSQL, once)")
    parser.add_argument("--list-requests", type=int, default=300)
    rounds.add_arguments(parser)
    args = parser.parse_args()
    if rounds.one_round(args, measure):
        return
    print(f"{args.runs} queued no-op runs drained, one free run behind {args.blocked:,} blocked queued runs, "
          f"/metrics x{args.requests} with them queued; {args.rounds} interleaved rounds; {rounds.machine_line()}",
          flush=True)
    with rounds.variants(args) as chosen:
        results = rounds.interleave(
            pathlib.Path(__file__), args=args, chosen=chosen,
            params=lambda v, url: {"url": url, "runs": args.runs, "blocked": args.blocked,
                                   "requests": args.requests},
            show=lambda r: " ".join(f"{f.title} {float(r[f.key]) * (1000 if f.unit == 'ms' else 1):.1f}"
                                    for f in FIGURES if f.key in r))
    rounds.report(results, FIGURES)
    print(rounds.machine_line())
    if args.rows:
        with tempfile.TemporaryDirectory(prefix="kubeline-scale-") as tmp, _pg_database() as url:
            asyncio.run(_migrate(url))
            seed_seconds = seed_runs(url, count=args.rows)
            listing = asyncio.run(list_phase(url, requests=args.list_requests, work=pathlib.Path(tmp)))
        print(f"\nGET /api/v1/runs over {args.rows:,} run rows in PostgreSQL (seeded by COPY in "
              f"{seed_seconds:.0f}s), {args.list_requests} requests each, in-process ASGI, one round")
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
