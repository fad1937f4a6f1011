"""Follow one pod's log into the ``LogSink``: with timestamps, resumable, without duplicates.

The log API is asked for ``follow=true&timestamps=true``; each line arrives as
``<RFC3339Nano> <text>``. A stream can end early (API server restart, kubelet log rotation, a
broken connection), so it is reopened with ``sinceTime`` at the second of the last line taken
(the API truncates sinceTime to seconds). Lines older than the last one taken are skipped; lines
stamped in the same microsecond as the last one are skipped as often as that text was already
taken, so a replay adds nothing and equal lines printed together are all kept. After a server
restart the position comes from the attempt's log file (the last stored output line), so the
log resumes where the previous process stopped.

Reading runs in a thread; lines reach the sink (on the event loop) in batches, as they arrive.

The entrypoint prints an end marker per stream (derived from the attempt token, which the stage
never sees) on stdout and on stderr after it handed the outputs over; once both are read, each
stream is complete, so following stops there instead of waiting for the kubelet to notice the exit.
"""

from __future__ import annotations

import asyncio
import calendar
import collections
import dataclasses
import pathlib
import threading
import time
from collections.abc import Iterable
from typing import Any

from kubeline.executors import base
from kubeline.executors.kubernetes import kube, manifests

_TAIL_BYTES = 256 * 1024


@dataclasses.dataclass
class Position:
    """The last line taken: its time in microseconds and the texts taken at that microsecond."""

    last_us: int = -1
    texts: collections.Counter[str] = dataclasses.field(default_factory=collections.Counter)

    def take(self, at_us: int, text: str) -> bool:
        """True when the line is new (and remember it)."""
        if at_us < self.last_us:
            return False
        if at_us == self.last_us:
            if self.texts[text] > 0:
                self.texts[text] -= 1
                return False
            return True  # a new line in the same microsecond; remembered on the next reconnect
        self.last_us = at_us
        self.texts = collections.Counter()
        return True

    def rewind(self, taken_at_last: list[str]) -> None:
        """Before reopening: every line taken at ``last_us`` must be skipped once."""
        self.texts = collections.Counter(taken_at_last)

    def since_time(self) -> str | None:
        if self.last_us < 0:
            return None
        return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.last_us // 1_000_000))


class _Clock:
    """RFC3339 second prefix -> epoch seconds, cached (log lines come in runs of one second)."""

    def __init__(self) -> None:
        self._prefix = ""
        self._seconds = 0

    def micros(self, stamp: str) -> int:
        prefix = stamp[:19]
        if prefix != self._prefix:
            self._seconds = calendar.timegm(time.strptime(prefix, "%Y-%m-%dT%H:%M:%S"))
            self._prefix = prefix
        fraction = stamp[20:].rstrip("Z") if len(stamp) > 20 and stamp[19] == "." else ""
        return self._seconds * 1_000_000 + int((fraction + "000000")[:6])


def split_line(raw: bytes, clock: _Clock) -> tuple[int, str] | None:
    text = raw.decode("utf-8", "replace")
    stamp, sep, rest = text.partition(" ")
    if not sep and not stamp.endswith("Z"):
        return None
    try:
        return clock.micros(stamp), rest.rstrip("\r") if rest.endswith("\r") else rest
    except ValueError:
        return None


def position_from_file(path: pathlib.Path | None) -> Position:
    """Where a previous process stopped: the last stdout/stderr line stored in the log file."""
    position = Position()
    if path is None or not path.is_file():
        return position
    with path.open("rb") as handle:
        size = handle.seek(0, 2)
        handle.seek(max(0, size - _TAIL_BYTES))
        tail = handle.read().split(b"\n")
    clock = _Clock()
    seen: list[tuple[int, str]] = []
    for raw in tail[1:] if size > _TAIL_BYTES else tail:
        stamp, _, rest = raw.decode("utf-8", "replace").partition(" ")
        stream, _, text = rest.partition(" ")
        if stream not in ("stdout", "stderr"):
            continue
        try:
            seen.append((clock.micros(stamp), text))
        except ValueError:
            continue
    if seen:
        position.last_us = max(at for at, _ in seen)
        position.rewind([text for at, text in seen if at == position.last_us])
    return position


def write_lines(sink: base.LogSink, lines: Iterable[tuple[float, str, str]], *, limit: int) -> None:
    """(time, stream, text) lines into ``sink``; a line longer than ``limit`` in pieces."""
    for at, stream, text in lines:
        if len(text) <= limit:
            sink.write(stream, text, at=at)
        else:
            for start in range(0, len(text), limit):
                sink.write(stream, text[start:start + limit], at=at)


class Follower:
    """Copies one pod's log into ``sink``; ``run_once`` is one stream (blocking, in a thread)."""

    def __init__(self, *, kube_: kube.Kube, namespace: str, pod: str, sink: base.LogSink,
                 loop: asyncio.AbstractEventLoop, position: Position, line_limit: int,
                 end_markers: Iterable[str] = ()) -> None:
        self.kube = kube_
        self.end_markers = frozenset(end_markers)
        self.markers_seen: set[str] = set()  # a replay after a reconnect may repeat one
        self.ended = False  # every stream's end marker read: the log is complete
        self.namespace = namespace
        self.pod = pod
        self.sink = sink
        self.loop = loop
        self.position = position
        self.line_limit = line_limit
        self.lines = 0
        self.delivered = 0  # lines written to the sink (counted on the loop)
        self._discarded = False
        self._at_last_us = position.last_us  # the texts taken in the last line's microsecond
        self._at_last: list[str] = list(position.texts.elements())
        self._response: Any = None
        self._stopped = threading.Event()

    def run_once(self) -> None:
        """Open the stream (resuming after the last line taken) and copy until it ends."""
        self.position.rewind(self._at_last)
        query: list[tuple[str, Any]] = [("container", manifests.CONTAINER), ("follow", "true"),
                                        ("timestamps", "true")]
        since = self.position.since_time()
        if since is not None:
            query.append(("sinceTime", since))
        response = self.kube.stream(f"{self.kube.path('pods', self.namespace, self.pod)}/log", query=query)
        self._response = response
        clock = _Clock()
        try:
            for raws in kube.iter_line_batches(response):  # one chunk: handed over at once
                if self._stopped.is_set():
                    break
                batch: list[tuple[int, str]] = []
                for raw in raws:
                    parsed = split_line(raw, clock)
                    if parsed is None:
                        continue
                    at_us, text = parsed
                    if text in self.end_markers:
                        self.markers_seen.add(text)
                        self.ended = self.markers_seen == self.end_markers
                        continue
                    if not self.position.take(at_us, text):
                        continue
                    if at_us != self._at_last_us:
                        self._at_last_us, self._at_last = at_us, []
                    self._at_last.append(text)
                    batch.append(parsed)
                if batch:
                    self._deliver(batch)
                if self.ended:
                    kube.abort(response)  # the container may still be exiting: do not wait for it
                    break
        finally:
            self._response = None
            response.release_conn()

    def _deliver(self, batch: list[tuple[int, str]]) -> None:
        self.lines += len(batch)
        if not self._stopped.is_set():
            self.loop.call_soon_threadsafe(self._write, batch)

    def _write(self, batch: list[tuple[int, str]]) -> None:
        if self._discarded:
            return
        self.delivered += len(batch)
        # the log file keeps exactly this microsecond
        write_lines(self.sink, [((at_us + 0.5) / 1_000_000, "stdout", text) for at_us, text in batch],
                    limit=self.line_limit)

    def discard(self) -> None:
        """Stop, and drop what was read but not yet written (the log comes from elsewhere)."""
        self._discarded = True
        self.stop()

    def stop(self) -> None:
        self._stopped.set()
        response = self._response
        if response is not None:
            kube.abort(response)
