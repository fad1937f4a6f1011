"""Benchmark at scale, on SQLite and PostgreSQL, median and spread over interleaved rounds.

    .venv/bin/python bench/scale.py [--runs 10000] [--blocked 10000] [--queued 100000]
                                    [--free 10] [--requests 100] [--backends sqlite,postgres]
                                    [--rounds 5] [--baseline REF] [--rows 1000000 --list-requests 300]

The three targets of issue 14, measured per round and backend (``bench/rounds.py``: a fresh
process and database each; ``--baseline REF`` measures an older ref's code the same way, in the
same rounds):

- drain: ``--runs`` one-stage no-op runs queued (bulk-inserted: the rows ``Engine.submit`` writes,
  run, stages and 'queued' event, made by ``Engine.prepare``; the queue is the setting, not the
  measure), then one ``Engine.serve`` dispatcher (64 runs at once, ``FakeExecutor``: the attempt
  ends at once, the server's 2 s safety-net poll) drives them all to the end: runs final per
  second from the dispatcher's start, queue-to-final p99.
- free run: ``--blocked`` queued runs of a ``maxInstances: 1`` pipeline behind one running run of
  it (bulk-inserted), a dispatcher serving; then ``--free`` runs of another pipeline are
  submitted one at a time (``Engine.submit``, the API's path), each waited for: trigger-to-start
  (run.started_at - run.created_at) median and max.
- /metrics: the blocked queue topped up to ``--queued`` queued runs (bulk), then ``--requests``
  ``GET /metrics`` through the real app (``api.create_app`` over ``bootstrap.open_kubeline``,
  in-process ASGI): p50/p99, with the queue depth checked. No ``VACUUM``: the rows are as
  fresh as a queue's (PostgreSQL's visibility map not yet set), ``ANALYZE`` as autovacuum would.

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
import statistics
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


async def _until_all_final(store: sql_store.SqlStore, serving: asyncio.Task[None]) -> None:
    while await store.list_runs(states_in=[R.QUEUED, R.RUNNING], limit=1):
        if serving.done():
            serving.result()
            raise RuntimeError("the dispatcher stopped with runs left")
        await asyncio.sleep(0.1)


def _engine(store: sql_store.SqlStore, work: pathlib.Path) -> engine_.Engine:
    return engine_.Engine(store=store, executors={"local": fake.FakeExecutor()},
                          logs=log_store.LogStore(work / f"logs-{uuid.uuid4().hex[:6]}"),
                          secrets=dispatch.NoSecrets(), max_concurrent_attempts=64)


async def bulk_submit(
    store: sql_store.SqlStore, engine: engine_.Engine, pipeline: runs.Pipeline, count: int
) -> list[str]:
    """``count`` queued runs with the rows ``Engine.submit`` writes (run, stages, 'queued' event),
    inserted 2,000 at a time: a queue to drain, without timing its making."""
    from kubeline.storage.sql import transactions

    ids: list[str] = []
    for at in range(0, count, 2000):
        made = [engine.prepare(pipeline) for _ in range(min(2000, count - at))]
        run_rows = [sql_rows.run_to_row(n.run) for n in made]
        stage_rows = [sql_rows.stage_to_row(s, position=i) for n in made for i, s in enumerate(n.stages)]
        events = [transactions.event_row(run_id=n.run.id, entity="run", entity_id=n.run.id, from_state=None,
                                         to_state=R.QUEUED, reason="", at=n.run.created_at) for n in made]

        def insert(conn: sa.Connection, run_rows: list[Any] = run_rows, stage_rows: list[Any] = stage_rows,
                   events: list[Any] = events) -> None:
            conn.execute(sa.insert(tables.runs), run_rows)
            conn.execute(sa.insert(tables.stage_runs), stage_rows)
            conn.execute(sa.insert(tables.events), events)

        await store.database.run(insert, write=True)
        ids.extend(n.run.id for n in made)
    return ids


async def _analyze(store: sql_store.SqlStore) -> None:
    """PostgreSQL: what autovacuum does after a bulk load (planner statistics); no VACUUM."""
    def analyze(conn: sa.Connection) -> None:
        if conn.dialect.name == "postgresql":
            conn.exec_driver_sql("ANALYZE")

    await store.database.run(analyze, write=True)


async def dispatch_phase(url: str, *, count: int, work: pathlib.Path) -> dict[str, Any]:
    store = await sql_store.SqlStore.open(url)
    try:
        pipeline = dispatch.noop_pipeline()
        await store.upsert_pipeline(pipeline)
        engine = _engine(store, work)
        t0 = time.perf_counter()
        queued = await bulk_submit(store, engine, pipeline, count)
        await _analyze(store)
        queue_seconds = time.perf_counter() - t0
        started = runs.utcnow()
        cpu0, t1 = time.process_time(), time.perf_counter()
        serving = asyncio.create_task(engine.serve(batch=32))
        await _until_all_final(store, serving)
        wall = time.perf_counter() - t1
        cpu = time.process_time() - cpu0
        serving.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await serving
        await engine.shutdown()
        finished = [await store.get_run(run_id) for run_id in queued]
        ends = [(r.finished_at - started).total_seconds() for r in finished if r.finished_at]
        return {"runs": count, "succeeded": sum(r.state is R.SUCCEEDED for r in finished),
                "seed_seconds": queue_seconds, "wall": wall, "rate": count / wall, "cpu_per_run": cpu / count,
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


async def _bulk_blocked(store: sql_store.SqlStore, template: dict[str, Any], count: int) -> None:
    for at in range(0, count, 5000):
        rows = [{**template, "id": runs.new_id()} for _ in range(min(5000, count - at))]
        await store.database.run(lambda conn, rows=rows: conn.execute(sa.insert(tables.runs), rows), write=True)


async def backlog_phase(url: str, *, blocked: int, queued: int, free: int, requests: int,
                        work: pathlib.Path) -> dict[str, Any]:
    """``blocked`` queued runs of a ``max_instances: 1`` pipeline behind one running run of it:
    how soon each of ``free`` runs of another pipeline starts (dispatcher serving); then, the
    queue topped up to ``queued`` runs, ``/metrics`` latency (``requests`` scrapes through the
    real app, in-process ASGI)."""
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
        await store.database.run(lambda conn: conn.execute(sa.insert(tables.runs), [holder]), write=True)
        await _bulk_blocked(store, template, blocked)
        await _analyze(store)
        seed_seconds = time.perf_counter() - t0
        pipeline = dispatch.noop_pipeline()
        await store.upsert_pipeline(pipeline)
        engine = _engine(store, work)
        serving = asyncio.create_task(engine.serve(batch=32))
        await asyncio.sleep(0.5)  # the dispatcher looked once and found nothing it may start
        starts = []
        for _ in range(free):
            run = await engine.submit(pipeline)
            while (found := await store.get_run(run.id)).started_at is None:
                if serving.done():
                    serving.result()
                    raise RuntimeError("the dispatcher stopped")
                await asyncio.sleep(0.002)
            assert found.started_at is not None
            starts.append((found.started_at - found.created_at).total_seconds())
            await asyncio.sleep(0.05)  # the next one is a new trigger, not part of a burst
        serving.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await serving
        await engine.shutdown()
        left = await store.count_runs()
        await _bulk_blocked(store, template, queued - left.get(R.QUEUED, 0))
        await _analyze(store)
        depth_expected = max(queued, left.get(R.QUEUED, 0))
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
    assert float(depth.split()[-1]) == depth_expected, depth
    return {"blocked": blocked, "queued": depth_expected, "seed_seconds": seed_seconds,
            "free_start": statistics.median(starts), "free_start_max": max(starts),
            "metrics_p50": dispatch._percentile(took, 50), "metrics_p99": dispatch._percentile(took, 99)}


def measure(p: dict[str, Any]) -> dict[str, Any]:
    work = pathlib.Path(p["work"])
    figures: dict[str, Any] = {}
    if p["runs"]:
        figures.update(asyncio.run(dispatch_phase(p["url"], count=p["runs"], work=work)))
    if p["blocked"] or p["queued"]:
        figures.update(asyncio.run(backlog_phase(p["url"], blocked=p["blocked"], queued=p["queued"],
                                                 free=p["free"], requests=p["requests"], work=work)))
    return figures


FIGURES = [
    rounds.Figure("rate", "drain: runs final/s"),
    rounds.Figure("p99", "drain: queue->final p99 (s)", "", 1),
    rounds.Figure("cpu_per_run", "drain: CPU per run", "ms", 2),
    rounds.Figure("free_start", "free run start, median", "ms"),
    rounds.Figure("free_start_max", "free run start, max", "ms"),
    rounds.Figure("metrics_p50", "/metrics p50", "ms"),
    rounds.Figure("metrics_p99", "/metrics p99", "ms"),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10_000, help="queued runs drained (0: skip)")
    parser.add_argument("--blocked", type=int, default=10_000,
                        help="queued runs behind a max_instances: 1 holder, ahead of the free runs")
    parser.add_argument("--free", type=int, default=10, help="free runs submitted one at a time behind them")
    parser.add_argument("--queued", type=int, default=100_000, help="queued runs while /metrics is scraped (0: skip)")
    parser.add_argument("--requests", type=int, default=100, help="/metrics scrapes per round")
    parser.add_argument("--rows", type=int, default=0,
                        help="also GET /api/v1/runs over this many COPY-seeded rows (PostgreSQL, once)")
    parser.add_argument("--list-requests", type=int, default=300)
    rounds.add_arguments(parser)
    args = parser.parse_args()
    if rounds.one_round(args, measure):
        return
    print(f"{args.runs:,} queued no-op runs drained; {args.free} free runs one at a time behind {args.blocked:,} "
          f"blocked queued runs; /metrics x{args.requests} with {args.queued:,} queued; {args.rounds} interleaved "
          f"rounds; {rounds.machine_line()}", flush=True)
    with rounds.variants(args) as chosen:
        results = rounds.interleave(
            pathlib.Path(__file__), args=args, chosen=chosen,
            params=lambda v, url: {"url": url, "runs": args.runs, "blocked": args.blocked, "queued": args.queued,
                                   "free": args.free, "requests": args.requests},
            show=lambda r: " ".join(f"{f.title} {float(r[f.key]) * (1000 if f.unit == 'ms' else 1):.1f}"
                                    for f in FIGURES if f.key in r))
    rounds.report(results, FIGURES)
    print(rounds.machine_line())
    bad = [f"{v.label}: {r['succeeded']}/{r['runs']}" for v, rs in results.items() for r in rs
           if "runs" in r and r["succeeded"] != r["runs"]]
    if bad:
        raise SystemExit(f"drained runs that did not succeed: {bad}")
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
