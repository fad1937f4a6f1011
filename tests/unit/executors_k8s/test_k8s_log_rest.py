"""The rest of a pod log after the container exited: the runtime may still be copying the last
lines into the log file, so a log whose end markers are due is read until they come, and only a
killed entrypoint's log (no markers will come) is complete after half a second of nothing new."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from kubernetes import client

from kubeline.executors.kubernetes import executor, kube, logs, manifests, tracking
from kubeline.runtime import pod as pod_entry
from kubeline.runtime import results

TOKEN = "rest-key"


class ListSink:
    def __init__(self) -> None:
        self.lines: list[tuple[str, str]] = []

    def write(self, stream: str, text: str, *, at: float | None = None) -> None:
        self.lines.append((stream, text))

    def close(self) -> None:
        pass


class Response:
    def __init__(self, data: bytes) -> None:
        self.data = data

    def stream(self, amount: int, *, decode_content: bool) -> Any:
        yield self.data

    def release_conn(self) -> None:
        pass


class LaggingLog(kube.Kube):
    """A log API whose file holds ``first`` until ``lag`` seconds after the first read, then
    ``first + rest`` (the runtime copying the pipes' last bytes late); every read answers from
    the start, as one since the last line's second does."""

    def __init__(self, first: bytes, rest: bytes, *, lag: float) -> None:
        super().__init__(client.ApiClient())
        self.first, self.rest, self.lag = first, rest, lag
        self.since: float | None = None

    def stream(self, path: str, *, query: list[tuple[str, Any]], read_timeout: float | None = None) -> Any:
        self.since = self.since or time.monotonic()
        late = time.monotonic() - self.since >= self.lag
        return Response(self.first + (self.rest if late else b""))


def _lines(texts: list[str], start: int = 0) -> bytes:
    return "".join(f"2026-12-05T10:00:{(start + i) // 1_000_000:02d}.{(start + i) % 1_000_000:06d}Z {t}\n"
                   for i, t in enumerate(texts)).encode()


def _terminated(code: int, reason: str) -> dict[str, Any]:
    return {"metadata": {"name": "kl-a1-x", "uid": "1", "resourceVersion": "9"}, "status": {
        "phase": "Succeeded" if code == 0 else "Failed", "containerStatuses": [
            {"name": manifests.CONTAINER, "state": {"terminated": {"exitCode": code, "reason": reason}}}]}}


async def _read(api: LaggingLog, pod: dict[str, Any]) -> tuple[ListSink, tracking.Tracked]:
    ex = executor.KubernetesExecutor(kube_=api, defaults=manifests.Defaults(), attempts=None)
    sink = ListSink()
    handle = {"attempt_id": "a1", "namespace": "ns", "job": "kl-a1",
              "end_markers": [pod_entry.end_marker(TOKEN, s) for s in ("stdout", "stderr")],
              "result_tag": results.line_tag(TOKEN)}
    tracked = tracking.Tracked(handle=handle, sink=sink, position=logs.Position())
    tracked.apply("pods", "MODIFIED", pod)
    try:
        await asyncio.wait_for(ex._follow_logs(tracked), 30)
        await asyncio.sleep(0)
    finally:
        await ex.close()
    return sink, tracked


async def test_a_log_whose_end_markers_are_due_is_read_until_they_come() -> None:
    body = [str(i) for i in range(1000)]
    tail = [*body[900:], f"{pod_entry.end_marker(TOKEN, 'stderr')} {results.UPLOADED}",
            f"{pod_entry.end_marker(TOKEN, 'stdout')} {results.UPLOADED}"]
    api = LaggingLog(_lines(body[:900]), _lines(tail, start=900), lag=2.0)  # 4x the old 0.5 s of patience
    sink, tracked = await _read(api, _terminated(0, "Completed"))
    assert [text for stream, text in sink.lines] == body
    assert tracked.follower is not None and tracked.follower.ended


async def test_a_killed_entrypoints_log_is_complete_after_half_a_second_of_nothing_new() -> None:
    api = LaggingLog(_lines(["started", "allocating"]), _lines(["never read"], start=2), lag=3.0)
    sink, tracked = await _read(api, _terminated(137, "OOMKilled"))
    # done before the late line came (3 s): no wait for markers that cannot come
    assert [text for _, text in sink.lines] == ["started", "allocating"]
    assert tracked.follower is not None and not tracked.follower.ended
