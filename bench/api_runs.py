"""Benchmark: runs created through ``POST /api/v1/runs`` by concurrent clients, two server replicas.

    .venv/bin/python bench/api_runs.py [--runs 1000] [--clients 8] [--replicas 2]
                                       [--backends postgres] [--rounds 5] [--baseline REF]

Per round (``bench/rounds.py``: a fresh process and a fresh database each), ``--replicas`` real
``kubeline server`` processes on 127.0.0.1 share the database; ``--clients`` HTTP clients (one
connection each, client ``i`` talks to replica ``i % replicas``) POST ``--runs`` runs of a
one-stage pipeline (``true`` on the local executor) as fast as the servers answer, while the
servers dispatch and run them. Figures:

- POST: runs created per second (all clients; first request sent -> last answer), p50/p99 of
  one request;
- final: runs final per second (first request -> last run final), every run succeeded;
- exactly once: attempts per run and "claimed" events per run are checked to be 1 (a round with
  a run started twice fails), and how many replicas drove runs is shown;
- server CPU per POST: the replicas' CPU time while the POSTs ran, divided by the runs (with the
  default ``--role all`` it includes dispatching and running the runs that started meanwhile);
- client CPU per POST: the load generator's own (it shares the machine): a plain kept-alive
  HTTP/1.1 connection per client, ~10x cheaper than httpx was.

``--role api`` starts the replicas as API-only servers (no dispatcher): the POSTs' own cost, with
nothing else competing for the CPU; runs stay queued, so there is no "final" figure then.

Access: the servers get an admin token (``KUBELINE_ADMIN_TOKEN``) and the clients send it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import pathlib
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import h11
import rounds  # bench/rounds.py

PIPELINE = "api-bench"
CLI = "from kubeline.cli.main import app; app()"  # `kubeline`, from the code on PYTHONPATH (--baseline)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def noop_pipeline(work: pathlib.Path) -> pathlib.Path:
    """A folder of pipelines holding one: PIPELINE, one ``true`` stage on the local executor."""
    folder = work / "pipelines" / PIPELINE
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "pipeline.yaml").write_text(
        f"name: {PIPELINE}\nexecutor: local\nstages:\n  - {{id: noop, type: shell, command: 'true'}}\n")
    return folder.parent


@contextlib.contextmanager
def servers(url: str, *, count: int, work: pathlib.Path, token: str, pipelines: pathlib.Path,
            role: str = "all", pids: list[int] | None = None) -> Iterator[list[str]]:
    """``count`` ``kubeline server`` processes on one database (these ``pipelines``), on 127.0.0.1;
    their base URLs once ready. Stopped (SIGTERM) on the way out."""
    procs: list[subprocess.Popen[bytes]] = []
    bases: list[str] = []
    try:
        for i in range(count):
            port = _free_port()
            env = {**os.environ, "KUBELINE_HOME": str(work / f"home-{i}"), "KUBELINE_DATABASE_URL": url,
                   "KUBELINE_REPLICA_ID": f"bench-replica-{i}", "KUBELINE_ADMIN_TOKEN": token,
                   "KUBELINE_PREHEAT_CONCURRENCY": "0", "PYTHONUNBUFFERED": "1"}
            log = (work / f"server-{i}.log").open("wb")
            procs.append(subprocess.Popen(
                [sys.executable, "-c", CLI, "server", "--host", "127.0.0.1", "--port", str(port),
                 "--upload-port", str(_free_port()), "--pipelines", str(pipelines), "--log-level", "warning",
                 *(["--role", role] if role != "all" else [])],
                env=env, stdout=log, stderr=subprocess.STDOUT))
            if pids is not None:
                pids.append(procs[-1].pid)
            bases.append(f"http://127.0.0.1:{port}")
            if i == 0:  # the first migrates the database: let it finish before the next starts
                _wait_ready(bases[0], procs[0], work / "server-0.log")
        for i, (base, proc) in enumerate(zip(bases, procs, strict=True)):
            _wait_ready(base, proc, work / f"server-{i}.log")
        yield bases
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _wait_ready(base: str, proc: subprocess.Popen[bytes], log: pathlib.Path, *, within: float = 60.0) -> None:
    import httpx

    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"server {base} exited ({proc.returncode}):\n{log.read_text()[-3000:]}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{base}/readyz", timeout=2).status_code == 200:
                return
        time.sleep(0.2)
    raise SystemExit(f"server {base} not ready within {within:.0f}s:\n{log.read_text()[-3000:]}")


class _Connection:
    """One kept-alive HTTP/1.1 connection that POSTs JSON, spoken with h11 (httpx's own protocol
    layer) over asyncio streams: the load generator shares the 2 cores with the servers, and
    httpx's client machinery cost ~2 ms of CPU per request here (as much as a third of a
    replica's), so the figure measured the client as much as the servers."""

    def __init__(self, base: str, *, token: str) -> None:
        host_port = base.removeprefix("http://")
        self.host, _, port = host_port.partition(":")
        self.port = int(port)
        self.headers = [("Host", host_port), ("Authorization", f"Bearer {token}"),
                        ("Content-Type", "application/json"), ("Accept", "application/json")]
        self.protocol = h11.Connection(our_role=h11.CLIENT)
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def post(self, path: str, body: bytes) -> tuple[int, bytes]:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
            self.protocol = h11.Connection(our_role=h11.CLIENT)
        assert self.reader is not None
        request = h11.Request(method="POST", target=path,
                              headers=[*self.headers, ("Content-Length", str(len(body)))])
        self.writer.write(b"".join(self.protocol.send(event) for event in
                                   (request, h11.Data(data=body), h11.EndOfMessage())))
        status, answer = 0, bytearray()
        while True:
            event = self.protocol.next_event()
            if event is h11.NEED_DATA:
                self.protocol.receive_data(await self.reader.read(65536))
            elif isinstance(event, h11.Response):
                status = event.status_code
            elif isinstance(event, h11.Data):
                answer += event.data
            elif isinstance(event, h11.EndOfMessage):
                break
            elif isinstance(event, h11.ConnectionClosed):
                raise SystemExit(f"POST {path}: the server closed the connection before answering")
        if self.protocol.our_state is h11.DONE and self.protocol.their_state is h11.DONE:
            self.protocol.start_next_cycle()
        else:  # the server asked to close (Connection: close): a new connection next time
            await self.close()
        return status, bytes(answer)

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            with contextlib.suppress(OSError):
                await self.writer.wait_closed()
        self.reader = self.writer = None


async def post_runs(bases: list[str], *, count: int, clients: int, token: str) -> tuple[float, list[float], list[str]]:
    """POST ``count`` runs from ``clients`` concurrent clients; wall time, latencies, run ids."""
    left = iter(range(count))
    latencies: list[float] = []
    ids: list[str] = []
    body = json.dumps({"pipeline": PIPELINE}).encode()

    async def client(number: int) -> None:
        connection = _Connection(bases[number % len(bases)], token=token)
        try:
            for _ in left:
                t = time.perf_counter()
                status, answer = await connection.post("/api/v1/runs", body)
                latencies.append(time.perf_counter() - t)
                if status != 201:
                    raise SystemExit(f"POST /api/v1/runs: {status} {answer[:500]!r}")
                ids.append(json.loads(answer)["id"])
        finally:
            await connection.close()

    t0 = time.perf_counter()
    await asyncio.gather(*(client(i) for i in range(clients)))
    return time.perf_counter() - t0, latencies, ids


def _counts(url: str) -> dict[str, Any]:
    """Run states, attempts per run, claims per run, replicas that drove runs: straight from the tables."""
    import sqlalchemy as sa

    from kubeline.storage.sql import engines, tables

    engine = sa.create_engine(engines.normalise_url(url))  # psycopg 3 (sync here) or pysqlite
    try:
        with engine.connect() as conn:
            r, a, e = tables.runs, tables.attempts, tables.events
            states: dict[str, int] = {str(k): int(v) for k, v in conn.execute(
                sa.select(r.c.state, sa.func.count()).group_by(r.c.state)).all()}
            per_run = conn.execute(sa.select(a.c.run_id, sa.func.count()).group_by(a.c.run_id)).all()
            claims = conn.execute(sa.select(e.c.entity_id, sa.func.count()).where(e.c.reason == "claimed")
                                  .group_by(e.c.entity_id)).all()
            owners = conn.execute(sa.select(sa.func.count(sa.distinct(r.c.owner)))).scalar_one()
    finally:
        engine.dispose()
    return {"states": states,
            "attempts": sorted({int(n) for _, n in per_run}), "runs_with_attempts": len(per_run),
            "claims": sorted({int(n) for _, n in claims}), "runs_claimed": len(claims), "owners": int(owners)}


def _cpu_seconds(pids: list[int]) -> float:
    """User + system CPU time of these processes so far (Linux ``/proc``)."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in pids:
        fields = pathlib.Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15 of stat)
    return total / ticks


def measure(p: dict[str, Any]) -> dict[str, Any]:
    work = pathlib.Path(p["work"]) / f"api-{secrets.token_hex(3)}"
    token = secrets.token_urlsafe(24)
    count = p["runs"]
    role = p.get("role", "all")
    pids: list[int] = []
    with servers(p["url"], count=p["replicas"], work=work, token=token, pipelines=noop_pipeline(work),
                 role=role, pids=pids) as bases:
        t0 = time.perf_counter()
        cpu0, client0 = _cpu_seconds(pids), time.process_time()
        post_wall, latencies, ids = asyncio.run(post_runs(bases, count=count, clients=p["clients"], token=token))
        cpu_per_post = (_cpu_seconds(pids) - cpu0) / count
        client_cpu_per_post = (time.process_time() - client0) / count
        if role != "all":  # nothing dispatches: the runs stay queued
            assert len(set(ids)) == count, "a POST answered an id twice"
            return {"runs": count, "post_rate": count / post_wall, "post_p50": rounds.percentile(latencies, 50),
                    "post_p99": rounds.percentile(latencies, 99), "cpu_per_post": cpu_per_post,
                    "client_cpu_per_post": client_cpu_per_post}
        deadline = time.monotonic() + p["final_timeout"]
        while True:
            counts = _counts(p["url"])
            if counts["states"].get("succeeded", 0) + counts["states"].get("failed", 0) \
                    + counts["states"].get("cancelled", 0) >= count or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        final_wall = time.perf_counter() - t0
    assert len(set(ids)) == count, "a POST answered an id twice"
    return {"runs": count, "post_rate": count / post_wall, "post_p50": rounds.percentile(latencies, 50),
            "post_p99": rounds.percentile(latencies, 99), "final_rate": count / final_wall,
            "cpu_per_post": cpu_per_post, "client_cpu_per_post": client_cpu_per_post,
            "succeeded": counts["states"].get("succeeded", 0), **{k: counts[k] for k in (
                "attempts", "runs_with_attempts", "claims", "runs_claimed", "owners")}}


FIGURES = [
    rounds.Figure("post_rate", "POST: runs created/s"),
    rounds.Figure("post_p50", "POST p50", "ms"),
    rounds.Figure("post_p99", "POST p99", "ms"),
    rounds.Figure("final_rate", "runs final/s"),
    rounds.Figure("cpu_per_post", "server CPU per POST", "ms", 2),
    rounds.Figure("client_cpu_per_post", "client CPU per POST", "ms", 2),
]
API_ONLY_FIGURES = [f for f in FIGURES if f.key != "final_rate"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=1000)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--replicas", type=int, default=2)
    parser.add_argument("--final-timeout", type=float, default=300.0, help="seconds to wait for every run to end")
    parser.add_argument("--role", choices=["all", "api"], default="all",
                        help="api: API-only replicas (no dispatcher), the POSTs' own cost")
    rounds.add_arguments(parser, backends="postgres")
    args = parser.parse_args()
    if rounds.one_round(args, measure):
        return
    what = "one 'true' stage, local executor" if args.role == "all" else "API-only replicas: runs stay queued"
    print(f"{args.runs} runs POSTed by {args.clients} clients to {args.replicas} server replicas "
          f"({what}); {args.rounds} interleaved rounds; {rounds.machine_line()}", flush=True)
    with rounds.variants(args) as chosen:
        results = rounds.interleave(
            pathlib.Path(__file__), args=args, chosen=chosen,
            params=lambda v, url: {"url": url, "runs": args.runs, "clients": args.clients,
                                   "replicas": args.replicas, "final_timeout": args.final_timeout, "role": args.role},
            show=_show)
    rounds.report(results, FIGURES if args.role == "all" else API_ONLY_FIGURES)
    print(rounds.machine_line())
    if args.role != "all":
        return
    bad = [f"{v.label}: {r['succeeded']}/{r['runs']} succeeded, attempts per run {r['attempts']}, "
           f"claims per run {r['claims']}" for v, rs in results.items() for r in rs
           if r["succeeded"] != r["runs"] or r["attempts"] != [1] or r["claims"] != [1]
           or r["runs_with_attempts"] != r["runs"] or r["runs_claimed"] != r["runs"]]
    if bad:
        raise SystemExit(f"runs not started exactly once or not succeeded: {bad}")


def _show(r: dict[str, Any]) -> str:
    line = (f"POST {r['post_rate']:.0f}/s p50 {r['post_p50'] * 1000:.0f} ms p99 {r['post_p99'] * 1000:.0f} ms "
            f"CPU/POST {r['cpu_per_post'] * 1000:.2f} ms (client {r['client_cpu_per_post'] * 1000:.2f} ms)")
    if "final_rate" not in r:
        return line
    return (f"{line} final {r['final_rate']:.0f}/s ok {r['succeeded']}/{r['runs']} attempts/run {r['attempts']} "
            f"claims/run {r['claims']} replicas driving {r['owners']}")


if __name__ == "__main__":
    main()
