"""PostgreSQL stopped for 5 s under load and started again (same port and data): no run is lost
or started twice, the worker process recovers without a restart, and runs queued during the
outage (their inserts wait for the database) run afterwards."""

from __future__ import annotations

import asyncio
import collections
import os
import pathlib
import time
from typing import Any

import pytest
import sqlalchemy as sa

from kubeline.domain import states
from kubeline.storage.sql import tables
from kubeline.testing import postgres

from .helpers import app, lines_of, pipeline, query, wait_until_final

R = states.RunState
OUTAGE = 5.0


@pytest.fixture
def env(tmp_path: pathlib.Path, postgres_url: str) -> dict[str, str]:
    return {**os.environ, "KUBELINE_HOME": str(tmp_path / "home"), "KUBELINE_DATABASE_URL": postgres_url,
            "KUBELINE_SECRET_KEY": "", "KUBELINE_LEASE_SECONDS": "10", "PYTHONUNBUFFERED": "1"}


@pytest.mark.timeout(240)
async def test_postgres_stopped_for_5_s_under_load(env: dict[str, str], spawn: Any, tmp_path: pathlib.Path,
                                                   postgres_server: postgres.PostgresServer) -> None:
    if not postgres_server.control:
        pytest.skip(f"{postgres.ENV_URL} names a server this test cannot stop and start")
    ran = tmp_path / "ran.txt"
    command = f'sleep 0.2; echo "$KUBELINE_RUN_ID $KUBELINE_STAGE" >> {ran}'
    steady = pipeline("steady", {"stages": [
        {"id": "a", "type": "shell", "command": command},
        {"id": "b", "type": "shell", "command": command, "dependsOn": ["a"]}]})
    async with app(env) as kl:
        await kl.store.upsert_pipeline(steady)
        before = [(await kl.engine.submit(steady)).id for _ in range(40)]
        worker = spawn("worker")
        deadline = time.monotonic() + 60
        while sum(1 for line in lines_of(ran) if line.endswith(" b")) < 5 and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        await asyncio.to_thread(postgres_server.stop)
        stopped = time.monotonic()
        ran_before = len(lines_of(ran))

        async def submit_more() -> list[str]:
            return [(await kl.engine.submit(steady)).id for _ in range(10)]

        during = asyncio.ensure_future(submit_more())  # waits for the database, then queues
        await asyncio.sleep(OUTAGE - (time.monotonic() - stopped))
        assert not during.done()
        assert worker.poll() is None
        await asyncio.to_thread(postgres_server.start)
        later = await asyncio.wait_for(during, 60)
        final = await wait_until_final(kl, before + later, within=150)
    assert ran_before < 2 * len(before)  # the outage came under load
    assert worker.poll() is None  # recovered without a restart
    assert collections.Counter(r.state for r in final) == {R.SUCCEEDED: 50}, \
        [(r.id, r.state.value, r.error) for r in final if r.state is not R.SUCCEEDED][:5]
    a = tables.attempts
    per_stage = await query(env["KUBELINE_DATABASE_URL"], sa.select(a.c.run_id, a.c.stage_id, sa.func.count())
                            .group_by(a.c.run_id, a.c.stage_id))
    assert len(per_stage) == 100 and [row for row in per_stage if row[2] != 1] == []  # none started twice
    scripts = collections.Counter(lines_of(ran))
    assert len(scripts) == 100 and [line for line, count in scripts.items() if count != 1] == []
