"""Benchmark: several replicas (engine processes) on one database drain a burst of runs, and
every run is started exactly once.

    .venv/bin/python bench/replicas.py [--runs 1000] [--replicas 1,2] [--backends postgres]
                                       [--rounds 5] [--baseline REF]

Per round, on a fresh database: ``--runs`` one-stage no-op runs are queued, then N replica
processes (each a real ``Engine`` on a real ``SqlStore``, dispatching with ``serve()`` as a
server replica does, attempts on the ``FakeExecutor`` so the figures are Kubeline's own cost)
are started together and drain the queue. Measured: runs final per second (from the replicas'
start to the last run final), and the exactly-once counts, from the database: runs whose stage
has more or fewer than one attempt, runs claimed more than once ("claimed" events), and how the
runs were shared among the replicas. A round with a run not succeeded, or not started exactly
once, fails the benchmark. ``--replicas 1,2`` measures each count in every round, one after the
other (interleaved like the backends), so "two replicas against one" is read from one invocation.

Every figure is the median and spread of ``--rounds`` interleaved rounds (``bench/rounds.py``).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import json
import pathlib
import signal
import sys
import time
import uuid
from typing import Any

import rounds  # bench/rounds.py
import sqlalchemy as sa
from dispatch import NoSecrets, noop_pipeline  # bench/dispatch.py

from kubeline.domain import states
from kubeline.engine import engine as engine_
from kubeline.logs import store as log_store
from kubeline.storage.sql import store as sql_store
from kubeline.storage.sql import tables as T
from kubeline.testing import executors as fake

REPLICA = "--replica"


async def replica(params: dict[str, Any]) -> None:
    """One replica process: ready, then (on a line on stdin) dispatch until SIGTERM."""
    store = await sql_store.SqlStore.open(params["url"], migrate=False)
    engine = engine_.Engine(store=store, executors={"local": fake.FakeExecutor()},
                            logs=log_store.LogStore(pathlib.Path(params["work"]) / f"logs-{uuid.uuid4().hex[:6]}"),
                            secrets=NoSecrets(), max_concurrent_attempts=64, owner=params["owner"])
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    print("ready", flush=True)
    await asyncio.to_thread(sys.stdin.readline)
    serving = asyncio.create_task(engine.serve(batch=32))
    await stop.wait()
    serving.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await serving
    await engine.shutdown()
    await store.close()


async def measure(url: str, *, count: int, replicas: int, work: pathlib.Path) -> dict[str, Any]:
    store = await sql_store.SqlStore.open(url)
    procs: list[asyncio.subprocess.Process] = []
    try:
        pipeline = noop_pipeline()
        await store.upsert_pipeline(pipeline)
        submitter = engine_.Engine(store=store, executors={"local": fake.FakeExecutor()},
                                   logs=log_store.LogStore(work / "submit-logs"), secrets=NoSecrets())
        ids = [(await submitter.submit(pipeline)).id for _ in range(count)]
        for number in range(replicas):
            params = {"url": url, "work": str(work), "owner": f"replica-{number}"}
            procs.append(await asyncio.create_subprocess_exec(
                sys.executable, __file__, REPLICA, json.dumps(params),
                stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE))
        for proc in procs:
            assert proc.stdout is not None and (await proc.stdout.readline()).strip() == b"ready"
        t0 = time.perf_counter()
        for proc in procs:  # all at once: they compete for the queue from the first claim
            assert proc.stdin is not None
            proc.stdin.write(b"go\n")
            await proc.stdin.drain()
        while True:
            counts = await store.count_runs()
            if not counts.get(states.RunState.QUEUED) and not counts.get(states.RunState.RUNNING):
                break
            await asyncio.sleep(0.02)
        wall = time.perf_counter() - t0

        def tally(conn: sa.Connection) -> dict[str, Any]:
            attempts = dict(conn.execute(sa.select(T.attempts.c.run_id, sa.func.count())
                                         .group_by(T.attempts.c.run_id)).all())
            claims = dict(conn.execute(sa.select(T.events.c.run_id, sa.func.count())
                                       .where(T.events.c.reason == "claimed").group_by(T.events.c.run_id)).all())
            owners = collections.Counter(owner for (owner,) in conn.execute(sa.select(T.runs.c.owner)))
            succeeded = conn.execute(sa.select(sa.func.count()).select_from(T.runs)
                                     .where(T.runs.c.state == states.RunState.SUCCEEDED.value)).scalar_one()
            return {"attempts": attempts, "claims": claims, "owners": owners, "succeeded": succeeded}

        found = await store.database.run(tally, write=False)
        not_once = sum(1 for run_id in ids if found["attempts"].get(run_id, 0) != 1)
        claimed_twice = sum(1 for run_id in ids if found["claims"].get(run_id, 0) != 1)
        shares = sorted(found["owners"].values(), reverse=True)
        return {"runs": count, "succeeded": found["succeeded"], "rate": count / wall, "seconds": wall,
                "not_once": not_once, "claimed_not_once": claimed_twice, "shares": shares,
                "busiest_share": shares[0] / count if shares else 0.0}
    finally:
        for proc in procs:
            if proc.returncode is None:
                proc.send_signal(signal.SIGTERM)
        for proc in procs:
            try:
                await asyncio.wait_for(proc.wait(), 30)
            except TimeoutError:
                proc.kill()
                await proc.wait()
        await store.close()


FIGURES = [
    rounds.Figure("rate", "runs final/s (all replicas)"),
    rounds.Figure("seconds", "drain time", "", 2),
    rounds.Figure("not_once", "runs not started once", "", 0),
    rounds.Figure("claimed_not_once", "runs not claimed once", "", 0),
    rounds.Figure("busiest_share", "busiest replica's share", "", 2),
]


def main() -> None:
    if len(sys.argv) == 3 and sys.argv[1] == REPLICA:
        asyncio.run(replica(json.loads(sys.argv[2])))
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=1000)
    parser.add_argument("--replicas", default="1,2", help="replica counts to measure, comma-separated")
    rounds.add_arguments(parser, backends="postgres")
    args = parser.parse_args()
    if rounds.one_round(args, lambda p: asyncio.run(measure(
            p["url"], count=p["runs"], replicas=p["replicas"], work=pathlib.Path(p["work"])))):
        return
    try:
        counts = [int(n) for n in args.replicas.split(",") if n.strip()]
    except ValueError:
        raise SystemExit(f"--replicas {args.replicas!r}: give replica counts, e.g. 1,2") from None
    if not counts or min(counts) < 1:
        raise SystemExit(f"--replicas {args.replicas!r}: give replica counts of at least 1, e.g. 1,2")
    print(f"{args.runs} no-op runs (FakeExecutor) drained by {' and by '.join(map(str, counts))} replica "
          f"processes, {args.rounds} interleaved rounds; {rounds.machine_line()}", flush=True)
    settings = {f"{n} replica{'s' if n > 1 else ''}": n for n in counts}
    with rounds.variants(args, settings=list(settings)) as chosen:
        results = rounds.interleave(
            pathlib.Path(__file__), args=args, chosen=chosen,
            params=lambda v, url: {"url": url, "runs": args.runs, "replicas": settings[v.setting]},
            show=lambda r: (f"ok {r['succeeded']}/{r['runs']} {r['rate']:.0f} runs/s in {r['seconds']:.1f}s; "
                            f"started not once: {r['not_once']}, claimed not once: {r['claimed_not_once']}; "
                            f"runs per replica {r['shares']}"))
    rounds.report(results, FIGURES)
    print(rounds.machine_line())
    bad = [f"{v.label}: {r['succeeded']}/{r['runs']} succeeded, {r['not_once']} not started once, "
           f"{r['claimed_not_once']} not claimed once" for v, rs in results.items() for r in rs
           if r["succeeded"] != r["runs"] or r["not_once"] or r["claimed_not_once"]]
    if bad:
        raise SystemExit(f"exactly once broken: {bad}")


if __name__ == "__main__":
    main()
