"""The object-store log backend against a real S3-compatible server (moto server mode on
127.0.0.1), with its index on SQLite and on PostgreSQL: chunks written while an attempt runs,
read and followed from another replica with no shared disk, resumed by cursor, buffered on local
disk while the store is down and uploaded after, deleted by retention."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import textwrap
import time
from typing import Any

import pytest
import sqlalchemy as sa

from kubeline.domain import errors, runs, specs, states
from kubeline.logs import availability, objects
from kubeline.pipelines import loader
from kubeline.storage.sql import engines, tables

pytestmark = pytest.mark.slow


async def chunk_rows(url: str, run_id: str) -> list[Any]:
    db = engines.open_database(url)
    try:
        query = sa.select(tables.log_chunks).where(tables.log_chunks.c.run_id == run_id).order_by(
            tables.log_chunks.c.stage_id, tables.log_chunks.c.attempt, tables.log_chunks.c.seq)
        return await db.run(lambda conn: list(conn.execute(query).mappings()), write=False)
    finally:
        await db.dispose()


async def until(condition: Any, within: float = 20.0) -> None:
    deadline = time.monotonic() + within
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.05)


async def collect(kl: Any, run_id: str, **kwargs: Any) -> list[Any]:
    return [line async for line in kl.logs.iter_lines(run_id, **kwargs)]


async def test_chunks_written_as_the_attempt_runs_read_by_another_replica(open_replica, s3, database_url) -> None:  # type: ignore[no-untyped-def]
    async with open_replica("a", log_chunk_seconds=0.2) as a, open_replica("b", log_follow_poll=0.2) as b:
        assert isinstance(a.logs, objects.ObjectLogStore)
        sink = a.logs.sink(run_id="run1", stage_id="s", attempt=1, secrets=["hunter22"])
        for i in range(5):
            sink.write("stdout", f"line {i} password hunter22", at=1_700_000_000 + i)
        await until(lambda: s3.keys("logs/run1/s/1/"))  # uploaded while the attempt still writes
        while not await chunk_rows(database_url, "run1"):  # then indexed
            await asyncio.sleep(0.05)
        assert len(s3.keys("logs/run1/s/1/")) == 1
        seen_by_b = [line.text for line in await collect(b, "run1")]
        assert seen_by_b == [f"line {i} password ***" for i in range(5)]
        sink.write("stderr", "line 5\rwith a carriage return", at=1_700_000_010)
        sink.write("stdout", "line 6", at=1_700_000_011)
        sink.close()
        await until(lambda: not list(a.settings.log_spool_dir.rglob("*.log")))  # uploaded, spool cleaned
        rows = await chunk_rows(database_url, "run1")
        assert [r["seq"] for r in rows] == [0, 1]
        assert rows[1]["byte_start"] == rows[0]["byte_count"] and rows[1]["line_start"] == 5
        assert rows[1]["line_count"] == 2
        assert s3.keys("logs/run1/") == [r["object_key"] for r in rows]
        got = await collect(b, "run1")
        assert [line.text for line in got][-2:] == ["line 5\rwith a carriage return", "line 6"]
        assert [line.stream for line in got][-2:] == ["stderr", "stdout"]
        assert got[0].at.timestamp() == 1_700_000_000  # the writer's times, not the reader's
        assert got[-1].cursor == f"s/1/{rows[1]['byte_start'] + rows[1]['byte_count']}"
        # resume after a cursor: exactly the lines after it
        done = asyncio.Event()
        done.set()
        after = [line.text async for batch in b.logs.follow("run1", after=got[3].cursor, until=done) for line in batch]
        assert after == ["line 4 password ***", "line 5\rwith a carriage return", "line 6"]
        assert not list((a.settings.log_spool_dir).rglob("*.log"))  # uploaded, spool cleaned


async def test_live_follow_across_replicas_and_retention(open_replica, s3, database_url) -> None:  # type: ignore[no-untyped-def]
    # PostgreSQL: the other replica is woken by the LOGS wake-up (NOTIFY), its 30 s safety-net poll
    # never fires; SQLite is one process: two stores there share no wake-ups, so it polls.
    poll = 30.0 if database_url.startswith("postgresql") else 0.2
    async with open_replica("a", log_chunk_seconds=0.2) as a, open_replica("b", log_follow_poll=poll) as b:
        sink = a.logs.sink(run_id="run2", stage_id="s", attempt=1)
        finished = asyncio.Event()
        got: list[tuple[float, str]] = []

        async def follower() -> None:
            async for batch in b.logs.follow("run2", until=finished):
                got.extend((time.monotonic(), line.text) for line in batch)

        task = asyncio.create_task(follower())
        written = {}
        for i in range(6):
            sink.write("stdout", f"live {i}")
            written[f"live {i}"] = time.monotonic()
            await asyncio.sleep(0.3)
        sink.close()
        await asyncio.sleep(0.5)
        finished.set()
        await asyncio.wait_for(task, 10)
        assert [text for _, text in got] == [f"live {i}" for i in range(6)]
        delays = [at - written[text] for at, text in got]
        assert max(delays[:-1]) < 1.5, delays  # seen by the other replica while it was written

        assert len(s3.keys("logs/run2/")) >= 2
        removed = await a.logs.delete_logs("run2")
        assert removed >= 2 and s3.keys("logs/run2/") == []
        assert await chunk_rows(database_url, "run2") == []
        assert await collect(b, "run2") == []


async def test_engine_run_with_the_store_down_mid_run(open_replica, s3, tmp_path, database_url, caplog) -> None:  # type: ignore[no-untyped-def]
    caplog.set_level(logging.DEBUG)
    folder = tmp_path / "pipelines" / "ticker"
    folder.mkdir(parents=True)
    (folder / "pipeline.yaml").write_text(textwrap.dedent("""
        stages:
          - {id: tick, type: shell, command: 'for i in $(seq 1 30); do echo "tick $i"; sleep 0.1; done'}
    """))
    async with open_replica("a", log_chunk_seconds=0.2) as a, open_replica("b") as b:
        pipeline = loader.load_folder(folder)
        await a.store.upsert_pipeline(pipeline)
        run = await a.engine.submit(pipeline)
        execution = asyncio.create_task(a.engine.execute(run.id))
        deadline = time.monotonic() + 30
        while not s3.keys(f"logs/{run.id}/"):
            assert time.monotonic() < deadline, "no chunk uploaded while the stage ran"
            await asyncio.sleep(0.05)
        s3.stop()  # connections are refused from now on
        try:
            delayed = ""
            while not delayed:
                assert time.monotonic() < deadline, "the log was never reported delayed"
                await asyncio.sleep(0.1)
                found = await availability.check(b.logs, run.id, attempts=await b.store.list_attempts(run.id))
                delayed = found.delayed
            assert "wait on" in delayed and s3.url in delayed and s3.secret not in delayed
            final = await asyncio.wait_for(execution, 60)  # the attempt ran on without the store
            assert final.state is states.RunState.SUCCEEDED
            assert list(a.settings.log_spool_dir.rglob("*.log"))  # the lines wait on local disk
        finally:
            s3.start()
        while (await availability.check(b.logs, run.id, attempts=await b.store.list_attempts(run.id))).delayed:
            assert time.monotonic() < deadline + 30, "the delayed log was never uploaded"
            await asyncio.sleep(0.2)
        texts = [line.text for line in await collect(b, run.id)]  # replica b has no spool of it
        assert [t for t in texts if t.startswith("tick")] == [f"tick {i}" for i in range(1, 31)]
        assert not list(a.settings.log_spool_dir.rglob("*.log"))
    assert s3.secret not in caplog.text


async def test_a_deleted_chunk_or_run_log_is_gone_with_the_reason(open_replica, s3) -> None:  # type: ignore[no-untyped-def]
    async with open_replica("a", log_chunk_seconds=0.1) as a:
        sink = a.logs.sink(run_id="run3", stage_id="s", attempt=1)
        sink.write("stdout", "hello")
        sink.close()
        await a.logs.close()  # drain: everything uploaded
        key = s3.keys("logs/run3/")[0]
        s3.client().delete_object(Bucket="kubeline-logs", Key=key)
        with pytest.raises(errors.GoneError, match="missing from bucket 'kubeline-logs'"):
            await collect(a, "run3")
        await a.logs.delete_logs("run3")
        from kubeline.logs import base

        found = await a.logs.availability("run3", ran=[base.AttemptKey(stage_id="s", attempt=1)])
        assert found.missing and "deleted by retention" in found.gone_reason


def test_s3_settings_need_a_bucket_and_hide_the_secret() -> None:
    from kubeline import settings

    secret = "s3cr3t-never-logged-9f2c"
    with pytest.raises(ValueError, match="KUBELINE_LOG_S3_BUCKET"):
        settings.Settings(log_store="s3")
    config = settings.Settings(log_store="s3", log_s3_bucket="b", log_s3_secret_access_key=secret)
    assert secret not in repr(config) and secret not in str(config.model_dump())


async def test_retention_deletes_old_chunks_from_the_bucket(open_replica, s3, database_url) -> None:  # type: ignore[no-untyped-def]
    spec = specs.PipelineSpec.model_validate({"stages": [{"id": "a", "type": "shell", "command": "true"}]})
    pipeline = runs.Pipeline(name="kept", source="api", spec=spec)
    async with open_replica("a", log_chunk_seconds=0.2, retention={"logs_max_age_days": 1}) as kl:
        await kl.store.upsert_pipeline(pipeline)
        old, new = (await kl.engine.submit(pipeline)), (await kl.engine.submit(pipeline))
        await kl.store.claim_queued_runs(limit=2, only=[old.id, new.id])
        for run in (old, new):
            sink = kl.logs.sink(run_id=run.id, stage_id="a", attempt=1)
            sink.write("stdout", f"a line of {run.id}")
            sink.close()
        await kl.store.transition_run(old.id, states.RunState.SUCCEEDED,
                                      finished_at=runs.utcnow() - dt.timedelta(days=3))
        await kl.store.transition_run(new.id, states.RunState.SUCCEEDED)
        await until(lambda: bool(s3.keys(f"logs/{old.id}/") and s3.keys(f"logs/{new.id}/")))
        plan = await kl.cleanup.apply()
        assert [(i.kind, i.target) for i in plan.items if i.kind in ("logs", "run")] == [("logs", old.id)]
        assert s3.keys(f"logs/{old.id}/") == [] and s3.keys(f"logs/{new.id}/")  # the bucket, not a file
        assert await chunk_rows(database_url, old.id) == [] and await chunk_rows(database_url, new.id)
        assert [line.text for line in await collect(kl, new.id)] == [f"a line of {new.id}"]
