"""Bounded load, loopback only: 50 SSE followers while 20 runs execute, twice. Every follower
gets every line of its run; the server's resident memory stays flat between rounds."""

from __future__ import annotations

import asyncio

import pytest

from kubeline import client as client_
from kubeline import testing

pytestmark = pytest.mark.slow
RUNS, FOLLOWERS, LINES = 20, 50, 300
MiB = 1024 * 1024


async def _round(api: client_.AsyncClient) -> None:
    run_ids = [(await api.create_run("chatty", {"lines": LINES})).id for _ in range(RUNS)]

    async def follow(run_id: str) -> list[str]:
        return [line.text async for line in api.follow_logs(run_id, stage="talk") if line.text.startswith("line ")]

    results = await asyncio.wait_for(
        asyncio.gather(*(follow(run_ids[i % RUNS]) for i in range(FOLLOWERS))), 240)
    expected = [f"line {i}" for i in range(1, LINES + 1)]
    lost = [i for i, got in enumerate(results) if got != expected]
    assert not lost, f"followers {lost[:5]} missed or repeated lines"
    for run_id in run_ids:
        assert (await api.wait(run_id, timeout=120)).state.value == "succeeded"


async def test_fifty_followers_twenty_runs(settings, tmp_path):
    env = {"KUBELINE_HOME": str(settings.home), "KUBELINE_DATABASE_URL": settings.database,
           "KUBELINE_PIPELINES_DIR": str(settings.pipelines_dir), "KUBELINE_MAX_CONCURRENT_ATTEMPTS": "20"}
    with testing.ServerProcess(env=env, log_file=tmp_path / "server.log") as server:
        async with client_.AsyncClient(server.url, token=server.token) as api:  # httpx allows 100 connections: all followers fit
            await _round(api)
            after_first = server.rss_bytes()
            await _round(api)
            after_second = server.rss_bytes()
    print(f"server RSS after round 1: {after_first / MiB:.1f} MiB, after round 2: {after_second / MiB:.1f} MiB")
    assert after_second < 400 * MiB, f"server RSS {after_second / MiB:.0f} MiB"
    assert after_second - after_first < 40 * MiB, (
        f"server RSS grew {(after_second - after_first) / MiB:.1f} MiB between identical rounds")
