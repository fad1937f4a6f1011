"""A short stage's log from its upload: taken only when none of the pod log was copied yet."""

from __future__ import annotations

import asyncio
from typing import Any

from kubernetes import client

from kubeline.executors.kubernetes import executor, kube, logs, manifests, tracking


class ListSink:
    def __init__(self) -> None:
        self.lines: list[tuple[str, str, float | None]] = []

    def write(self, stream: str, text: str, *, at: float | None = None) -> None:
        self.lines.append((stream, text, at))

    def close(self) -> None:
        pass


def _executor() -> executor.KubernetesExecutor:
    return executor.KubernetesExecutor(kube_=kube.Kube(client.ApiClient()), defaults=manifests.Defaults(),
                                       attempts=None, log_line_limit=10)


def _tracked(sink: ListSink, position: logs.Position | None = None) -> tracking.Tracked:
    return tracking.Tracked(handle={"attempt_id": "a1", "namespace": "ns", "job": "kl-a1"}, sink=sink,
                            position=position or logs.Position())


def _follower(tracked: tracking.Tracked, loop: asyncio.AbstractEventLoop) -> logs.Follower:
    return logs.Follower(kube_=kube.Kube(client.ApiClient()), namespace="ns", pod="kl-a1-x", sink=tracked.sink,
                         loop=loop, position=tracked.position, line_limit=10)


UPLOADED: list[Any] = [[100.25, "stdout", "hello"], [100.5, "stderr", "a line of 23 characters"]]


async def test_nothing_copied_yet_the_uploaded_log_is_the_log() -> None:
    sink, ex = ListSink(), _executor()
    tracked = _tracked(sink)
    tracked.log_task = asyncio.create_task(asyncio.sleep(60))  # waiting for the pod to be served
    follower = tracked.follower = _follower(tracked, asyncio.get_running_loop())
    assert ex._log_from_upload(tracked, UPLOADED)
    assert sink.lines == [("stdout", "hello", 100.25), ("stderr", "a line of ", 100.5),
                          ("stderr", "23 charact", 100.5), ("stderr", "ers", 100.5)]  # split at the limit
    await asyncio.sleep(0)
    assert tracked.log_task.cancelled()
    follower._write([(1, "late line of the pod log")])  # read before the switch, written after: dropped
    assert len(sink.lines) == 4


async def test_a_pod_log_already_copied_is_read_to_its_end_instead() -> None:
    sink, ex = ListSink(), _executor()
    tracked = _tracked(sink)
    follower = tracked.follower = _follower(tracked, asyncio.get_running_loop())
    follower._write([(5_000_000, "first")])
    assert not ex._log_from_upload(tracked, UPLOADED)
    assert [text for _, text, _ in sink.lines] == ["first"]
    follower._write([(6_000_000, "second")])
    assert [text for _, text, _ in sink.lines] == ["first", "second"]


async def test_after_a_restart_with_lines_stored_the_pod_log_is_followed() -> None:
    sink, ex = ListSink(), _executor()
    tracked = _tracked(sink, logs.Position(last_us=5_000_000))  # restored from the log file
    assert not ex._log_from_upload(tracked, UPLOADED)
    assert sink.lines == []
