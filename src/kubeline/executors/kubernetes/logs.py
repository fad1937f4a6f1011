"""Follow one pod's log into the ``LogSink``: with timestamps, resumable, without duplicates.

The log API is asked for ``follow=true&timestamps=true``; each line arrives as
``<RFC3339Nano> <text>``. A stream can end early (API server restart, kubelet log rotation, a
broken connection), so it is reopened with ``sinceTime`` at the second of the last line taken
(the API truncates sinceTime to seconds). Only such a replay is filtered: lines older than the
last one taken are skipped, and lines stamped in the same microsecond as the last one as often
as that text was already taken, until the first new line; from there on every line is taken. So
a replay adds nothing, equal lines printed together are all kept, and a live stream loses no
line even when the node's wall clock steps back while the stage writes (the runtime stamps lines
with it; a VM's clock is corrected in steps). After a server restart the position comes from
the attempt's log file (the last stored output line), so the log resumes where the previous
process stopped. A line cut off by a broken stream (no newline: the kubelet ends every line with
one) is not taken; the next stream brings it whole.

Reading runs in a thread; lines reach the sink (on the event loop) in batches, as they arrive.

The entrypoint prints an end marker per stream (derived from the attempt token, which the stage
never sees) on stdout and on stderr after the stage exited, the stdout one followed by the
attempt's result lines (``runtime.results``: kept out of the sink, collected by ``reader``);
once all are read, the log is complete, so following stops there instead of waiting for the
kubelet to notice the exit.

The end of an attempt never waits for a follow to close (containerd 1.6 can leave one open after
the container exited): ``run_once(follow=False)`` reads what the log holds now and returns, and
the executor switches to such bounded reads as soon as the pod status says the container exited;
a follow that brings nothing for ``STALL_SECONDS`` times out and is reopened after the last line.
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
from kubeline.runtime import results

_TAIL_BYTES = 256 * 1024
STALL_SECONDS = 30.0  # a follow silent this long is reopened (after the last line taken)


@dataclasses.dataclass
class Position:
    """The last line taken: its time in microseconds and, while a replay is being skipped, the
    texts taken at that microsecond that are still to come again."""

    last_us: int = -1
    texts: collections.Counter[str] = dataclasses.field(default_factory=collections.Counter)
    replaying: bool = False  # a reopened stream: lines up to the last one taken come again

    def take(self, at_us: int, text: str) -> bool:
        """True when the line is new (and remember it)."""
        if self.replaying:
            if at_us < self.last_us:
                return False
            if at_us == self.last_us and self.texts[text] > 0:
                self.texts[text] -= 1
                return False
            self.replaying = False  # caught up: the rest of this stream is new, whatever its stamps
        if at_us != self.last_us:
            self.last_us = at_us
            self.texts = collections.Counter()
        return True  # a new line in the last microsecond is remembered by the caller (``rewind``)

    def rewind(self, taken_at_last: list[str]) -> None:
        """Before reopening: every line taken at ``last_us`` must be skipped once."""
        self.texts = collections.Counter(taken_at_last)
        self.replaying = self.last_us >= 0

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
    if path is None or not path.is_file():
        return Position()
    with path.open("rb") as handle:
        size = handle.seek(0, 2)
        handle.seek(max(0, size - _TAIL_BYTES))
        return position_from_tail(handle.read(), cut=size > _TAIL_BYTES)


async def stored_position(sink: base.LogSink) -> Position:
    """``position_from_tail`` of what the sink's log store holds (any backend)."""
    tail = await base.stored_tail(sink, max_bytes=_TAIL_BYTES)
    return position_from_tail(tail, cut=len(tail) >= _TAIL_BYTES)


def position_from_tail(data: bytes, *, cut: bool = False) -> Position:
    """Where a previous process stopped: the last stdout/stderr line in stored log bytes."""
    position = Position()
    tail = data.split(b"\n")
    clock = _Clock()
    seen: list[tuple[int, str]] = []
    for raw in tail[1:] if cut else tail:
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
                 end_markers: Iterable[str] = (), result_tag: str | None = None) -> None:
        self.kube = kube_
        self.reader = results.Reader(frozenset(end_markers), result_tag)  # replays repeat lines: kept once
        self.ended = False  # every end marker and result line read: the log is complete
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

    def run_once(self, *, follow: bool = True) -> int:
        """Open the stream (resuming after the last line taken) and copy until it ends; without
        ``follow``, what the log holds now. Returns the number of new lines taken."""
        self.position.rewind(self._at_last)
        taken = self.lines
        if self._stopped.is_set():
            return 0
        response = self.kube.stream(f"{self.kube.path('pods', self.namespace, self.pod)}/log",
                                    query=self._query(follow=follow), read_timeout=STALL_SECONDS)
        self._response = response
        clock = _Clock()
        try:
            for raws in kube.iter_line_batches(response, whole_lines=True):  # a chunk at once
                if self._stopped.is_set():
                    break
                batch: list[tuple[int, str]] = []
                for raw in raws:
                    parsed = split_line(raw, clock)
                    if parsed is None:
                        continue
                    at_us, text = parsed
                    if self.reader.take(text):
                        self.ended = self.reader.complete
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
        return self.lines - taken

    def _query(self, *, follow: bool) -> list[tuple[str, Any]]:
        query: list[tuple[str, Any]] = [("container", manifests.CONTAINER), ("timestamps", "true")]
        if follow:
            query.append(("follow", "true"))
        since = self.position.since_time()
        if since is not None:
            query.append(("sinceTime", since))
        return query

    def interrupt(self) -> None:
        """End the current stream now (the next ``run_once`` resumes after the last line)."""
        response = self._response
        if response is not None:
            kube.abort(response)

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
