"""Follow one stream (stdout or stderr) of a container's log into the ``LogSink``.

The Engine API is asked for ``follow=true&timestamps=true``; with the ``json-file`` driver every
frame is one log message ``<RFC3339Nano> <text>`` that ends in ``\\n``, except when dockerd
split a long line into 16 KiB partial messages (those carry no ``\\n`` and the next frame
carries another timestamp, which is dropped). A stream of a container that has already exited
returns everything and ends, so attempts of a few milliseconds are logged completely.

A stream can end early (read timeout of a quiet container, daemon restart), so it is reopened
with ``since`` at the second of the last line taken; in that replay, lines older than that are
skipped, and at the last line's microsecond as many lines as were already taken there, until
the first new line: from there on every line is taken, so a live stream loses nothing when the
host's wall clock (dockerd's stamps) steps back. After a server restart
the position comes from the attempt's log file (per stream: the two streams are read apart and
need not be equally far), so the log resumes where the previous process stopped.

Each stream is read in a thread; lines reach the sink on the event loop in batches.
"""

from __future__ import annotations

import asyncio
import calendar
import collections
import contextlib
import dataclasses
import pathlib
import re
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

from kubeline.executors import base

_TAIL_BYTES = 256 * 1024
_STAMP = re.compile(rb"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d{1,9}))?Z ")


@dataclasses.dataclass
class Position:
    """The last line taken: its time in microseconds and how many lines were taken at it."""

    last_us: int = -1
    at_last: int = 0
    _skip: int = 0
    _replaying: bool = False

    def reopen(self) -> None:
        """Before reading again from ``since()``: the lines up to ``last_us`` come again."""
        self._skip = self.at_last
        self._replaying = self.last_us >= 0

    def take(self, at_us: int) -> bool:
        if self._replaying:
            if at_us < self.last_us:
                return False
            if at_us == self.last_us and self._skip > 0:
                self._skip -= 1
                return False
            self._replaying = False  # caught up: the rest of this stream is new, whatever its stamps
        if at_us == self.last_us:
            self.at_last += 1
        else:
            self.last_us, self.at_last = at_us, 1
        return True

    def since(self) -> int | None:
        return self.last_us // 1_000_000 if self.last_us > 0 else None


def positions_from_file(path: pathlib.Path | None) -> dict[str, Position]:
    """Per stream, where a previous process stopped: the last lines stored in the log file."""
    if path is None or not path.is_file():
        return positions_from_tail(b"")
    with path.open("rb") as handle:
        size = handle.seek(0, 2)
        handle.seek(max(0, size - _TAIL_BYTES))
        return positions_from_tail(handle.read(), cut=size > _TAIL_BYTES)


async def stored_positions(sink: base.LogSink) -> dict[str, Position]:
    """``positions_from_tail`` of what the sink's log store holds (any backend)."""
    tail = await base.stored_tail(sink, max_bytes=_TAIL_BYTES)
    return positions_from_tail(tail, cut=len(tail) >= _TAIL_BYTES)


def positions_from_tail(data: bytes, *, cut: bool = False) -> dict[str, Position]:
    """Per stream, the last lines of stored log bytes (``cut``: the first line may be partial)."""
    found = {"stdout": Position(), "stderr": Position()}
    tail = data.split(b"\n")
    for raw in tail[1:] if cut else tail:
        stamp, _, rest = raw.partition(b" ")
        stream = rest.partition(b" ")[0].decode("ascii", "replace")
        if stream not in found:
            continue
        at_us = _micros(stamp + b" ")
        if at_us is not None:
            found[stream].take(at_us)
    return found


def _micros(frame: bytes) -> int | None:
    match = _STAMP.match(frame)
    if match is None:
        return None
    seconds = calendar.timegm(time.strptime(match.group(1).decode(), "%Y-%m-%dT%H:%M:%S"))
    return seconds * 1_000_000 + int(((match.group(2) or b"") + b"000000")[:6])


def split_bytes(line: bytes, limit: int) -> list[bytes]:
    """``line`` in pieces of at most ``limit`` bytes, not cutting UTF-8 characters."""
    pieces = []
    while len(line) > limit:
        cut = limit
        while cut > limit - 3 and (line[cut] & 0xC0) == 0x80:
            cut -= 1
        if (line[cut] & 0xC0) == 0x80:
            cut = limit  # not UTF-8 anyway
        pieces.append(line[:cut])
        line = line[cut:]
    pieces.append(line)
    return pieces


class Follower:
    """Copies one stream of a container's log into ``sink`` (``run`` blocks: call it in a thread)."""

    def __init__(self, *, open_stream: Callable[..., Any], stream: str,
                 sink: base.LogSink, loop: asyncio.AbstractEventLoop, position: Position,
                 line_limit: int, still_running: Callable[[], bool]) -> None:
        self.open_stream = open_stream  # (since, follow=) -> an iterable of frames with close()
        self.stream = stream
        self.sink = sink
        self.loop = loop
        self.position = position
        self.line_limit = line_limit
        self.still_running = still_running
        self.error: str | None = None
        self._current: Any = None
        self._stopped = threading.Event()
        self._queue: collections.deque[tuple[float, str]] = collections.deque()
        self._scheduled = False

    def run(self) -> None:
        """Read until the container has stopped and its stream has ended (or ``stop``).

        A follow stream can end on the container's exit before dockerd has logged the last
        (partial) message, so once the container has stopped the log is read once more from
        the last line taken: what was already taken is skipped, the rest is added.
        """
        failures = 0
        final = False
        while not self._stopped.is_set():
            self.position.reopen()
            try:
                frames = self.open_stream(self.position.since(), follow=not final)
                self._current = frames
                if self._stopped.is_set():
                    frames.close()
                    break
                self._copy(frames)
                failures, self.error = 0, None
            except Exception as exc:  # a broken or timed-out stream: reopen after the last line
                failures += 1
                self.error = str(exc)
                if self._stopped.is_set() or failures > 50:
                    break
                try:
                    final = final or not self.still_running()
                except Exception:  # the container is gone: nothing more to read
                    break
                time.sleep(min(0.05 * failures, 1.0))
                continue
            finally:
                self._current = None
            if final:
                break
            try:
                final = not self.still_running()
            except Exception as exc:  # the container is gone: nothing more to read
                self.error = str(exc)
                break

    def stop(self) -> None:
        self._stopped.set()
        current = self._current
        if current is not None:
            with contextlib.suppress(Exception):  # closing a half-dead stream
                current.close()

    def _copy(self, frames: Iterable[bytes]) -> None:
        pending = b""
        at_us = -1
        for frame in frames:
            if self._stopped.is_set():
                return
            stamp = _STAMP.match(frame)
            text = frame
            if stamp is not None:
                micros = _micros(frame)
                if not pending:
                    at_us = micros if micros is not None else at_us
                text = frame[stamp.end():]
            pending += text
            if pending.endswith(b"\n"):
                self._line(at_us, pending[:-1])
                pending = b""
            elif len(pending) >= self.line_limit:
                pieces = split_bytes(pending, self.line_limit)
                for piece in pieces[:-1]:
                    self._piece(at_us, piece)
                pending = pieces[-1]
        if pending and not self._stopped.is_set():
            self._line(at_us, pending)  # the last line, without a newline

    def _line(self, at_us: int, line: bytes) -> None:
        if line.endswith(b"\r"):
            line = line[:-1]
        for piece in split_bytes(line, self.line_limit):
            self._piece(at_us, piece)

    def _piece(self, at_us: int, piece: bytes) -> None:
        if not self.position.take(at_us):
            return
        # +0.5 us: the sink's stamp truncates, and a float cannot hold every microsecond exactly.
        self._queue.append(((at_us + 0.5) / 1_000_000 if at_us >= 0 else time.time(),
                            piece.decode("utf-8", "replace")))
        if not self._scheduled:
            self._scheduled = True
            self.loop.call_soon_threadsafe(self._drain)

    def _drain(self) -> None:
        self._scheduled = False
        queue, write, stream = self._queue, self.sink.write, self.stream
        while queue:
            at, text = queue.popleft()
            write(stream, text, at=at)
