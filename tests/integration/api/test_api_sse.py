"""Following logs and events by SSE: resume with Last-Event-ID loses and repeats nothing; every
follower gets every line; streams end when the run is final."""

from __future__ import annotations

import asyncio

import httpx

from kubeline import client as client_

LINES = 400


def _frames(response: httpx.Response, *, stop_after: int | None = None) -> list[tuple[str, str | None, str]]:
    parser = client_._SseParser()
    frames = []
    for line in response.iter_lines():
        frame = parser.feed(line)
        if frame is not None:
            frames.append(frame)
            if stop_after is not None and len(frames) >= stop_after:
                break
    return frames


def _texts(frames: list[tuple[str, str | None, str]]) -> list[str]:
    return [client_.schemas.LogLineOut.model_validate_json(data).text for event, _, data in frames if event == "log"]


def test_log_stream_resumes_exactly(client, server, http):
    run = client.create_run("chatty", {"lines": LINES})
    url = f"{server.url}/api/v1/runs/{run.id}/logs/stream"
    with http.stream("GET", url, params={"stage": "talk"}, timeout=60) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        first = _frames(response, stop_after=50)
    last_id = first[-1][1]
    assert last_id
    with http.stream("GET", url, params={"stage": "talk"}, headers={"Last-Event-ID": last_id}, timeout=60) as response:
        rest = _frames(response)
    assert rest[-1][0] == "end" and '"succeeded"' in rest[-1][2]
    texts = [t for t in _texts(first) + _texts(rest) if t.startswith("line ")]
    assert texts == [f"line {i}" for i in range(1, LINES + 1)]
    ids = [frame_id for event, frame_id, _ in first + rest if event == "log"]
    assert len(ids) == len(set(ids))


def test_resume_after_the_run_ended_and_bad_cursor(client, server, http):
    run = client.create_run("chatty", {"lines": 20})
    client.wait(run.id, timeout=60)
    every = list(client.follow_logs(run.id))
    middle = every[10]
    after = list(client.follow_logs(run.id, after=middle.cursor))
    assert [line.cursor for line in after] == [line.cursor for line in every[11:]]
    bad = http.get(f"{server.url}/api/v1/runs/{run.id}/logs/stream", headers={"Last-Event-ID": "garbage"})
    assert bad.status_code == 422 and bad.headers["content-type"].startswith("application/problem+json")
    assert http.get(f"{server.url}/api/v1/runs/nope/logs/stream").status_code == 404


def test_event_stream_resumes(client, server, http):
    run = client.create_run("hello", {"count": 1})
    every = list(client.follow_events(run.id))
    assert every[0].to_state == "queued" and every[-1].to_state == "succeeded"
    assert [e.id for e in every] == sorted({e.id for e in every})
    resumed = list(client.follow_events(run.id, after=every[2].id))
    assert [e.id for e in resumed] == [e.id for e in every[3:]]
    with http.stream("GET", f"{server.url}/api/v1/runs/{run.id}/events/stream",
                      headers={"Last-Event-ID": str(every[-2].id)}) as response:
        frames = _frames(response)
    assert [f[1] for f in frames if f[0] == "change"] == [str(every[-1].id)]
    assert frames[-1][0] == "end"
    assert http.get(f"{server.url}/api/v1/runs/{run.id}/events/stream",
                     headers={"Last-Event-ID": "x"}).status_code == 422


async def test_several_followers_each_get_every_line(server):
    async with client_.AsyncClient(server.url, token=server.token) as api:
        run = await api.create_run("chatty", {"lines": LINES})

        async def follow() -> list[str]:
            return [line.text async for line in api.follow_logs(run.id, stage="talk")
                    if line.text.startswith("line ")]

        results = await asyncio.wait_for(asyncio.gather(*(follow() for _ in range(8))), 90)
    expected = [f"line {i}" for i in range(1, LINES + 1)]
    assert all(result == expected for result in results)
