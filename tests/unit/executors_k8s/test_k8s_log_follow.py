"""Following a pod log: a live stream keeps every line, a reopened one skips exactly the replay."""

from __future__ import annotations

import asyncio
import io
from typing import Any

import urllib3
from kubernetes import client

from kubeline.executors.kubernetes import kube, logs


class CannedLogs(kube.Kube):
    """The log API's answers, one byte string per request (real urllib3 responses over them)."""

    def __init__(self, answers: list[bytes]) -> None:
        super().__init__(client.ApiClient())
        self.answers = answers
        self.queries: list[dict[str, Any]] = []

    def stream(self, path: str, *, query: list[tuple[str, Any]], read_timeout: float | None = None) -> Any:
        self.queries.append(dict(query))
        return urllib3.HTTPResponse(body=io.BytesIO(self.answers.pop(0)), preload_content=False)


class ListSink:
    def __init__(self) -> None:
        self.texts: list[str] = []

    def write(self, stream: str, text: str, *, at: float | None = None) -> None:
        self.texts.append(text)

    def close(self) -> None:
        pass


def _line(micros: int, text: str) -> bytes:
    return f"2024-01-02T03:04:05.{micros:06d}Z {text}\n".encode()


async def _follow(answers: list[bytes]) -> tuple[ListSink, CannedLogs]:
    sink, api = ListSink(), CannedLogs(answers)
    follower = logs.Follower(kube_=api, namespace="ns", pod="kl-a1-x", sink=sink, loop=asyncio.get_running_loop(),
                             position=logs.Position(), line_limit=1000)
    for _ in range(len(answers)):  # each run_once takes one answer
        await asyncio.to_thread(follower.run_once)
    await asyncio.sleep(0)  # the batches handed to the loop
    return sink, api


async def test_a_clock_step_back_loses_no_line_and_a_cut_line_comes_whole_from_the_next_stream() -> None:
    first = _line(10, "a") + _line(20, "b") + _line(15, "c") + _line(30, "d") + _line(40, "e-whole")[:-5]
    again = _line(10, "a") + _line(20, "b") + _line(15, "c") + _line(30, "d") + _line(40, "e-whole") + _line(50, "f")
    sink, api = await _follow([first, again])
    assert sink.texts == ["a", "b", "c", "d", "e-whole", "f"]  # "c" is stamped before "b": kept
    assert api.queries[1]["sinceTime"] == "2024-01-02T03:04:05Z"


async def test_equal_lines_in_one_microsecond_are_all_kept_across_a_reopen() -> None:
    first = _line(10, "x") + _line(10, "x")
    again = _line(10, "x") + _line(10, "x") + _line(10, "x") + _line(11, "y")
    sink, _ = await _follow([first, again])
    assert sink.texts == ["x", "x", "x", "y"]


def test_whole_lines_leaves_out_a_cut_off_end() -> None:
    def response() -> Any:
        return urllib3.HTTPResponse(body=io.BytesIO(b"one\ntwo\nthr"), preload_content=False)

    assert list(kube.iter_lines(response())) == [b"one", b"two", b"thr"]
    assert [line for batch in kube.iter_line_batches(response(), whole_lines=True) for line in batch] == [
        b"one", b"two"]
