"""Tailing an attempt's stdout/stderr files into a ``LogSink``, line by line.

The attempt writes to plain files (so it outlives Kubeline and can be adopted); this reads them
in fixed-size chunks (memory stays flat whatever the attempt prints), splits lines longer than
the limit (at a UTF-8 character boundary), and decodes with replacement, so binary garbage never
breaks logging. ``offset`` counts the bytes already handed to the sink as whole lines; it is
saved in the work dir so an adopting executor resumes exactly there: no line lost or repeated.
With ``punch`` (a work dir on tmpfs, see ``local_workdir``) what was handed to the sink is
punched out of the file every ``PUNCH_EVERY`` bytes (``fallocate``, the size kept, so the
attempt writes on at its offset): only output not read yet takes memory.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
import pathlib
import time

from kubeline.executors import base, local_stamps

CHUNK = 256 * 1024
_CHUNKS_PER_PUMP = 4  # then yield to the event loop
PUNCH_EVERY = 1 << 20  # bytes read since the last punch
_PAGE = 4096
_FALLOC_PUNCH = 0x01 | 0x02  # FALLOC_FL_KEEP_SIZE | FALLOC_FL_PUNCH_HOLE
_libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
_libc.fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64]


def punch_hole(fd: int, offset: int, length: int) -> None:
    """Free the bytes ``[offset, offset + length)`` of the file (they read as zeros after)."""
    if _libc.fallocate(fd, _FALLOC_PUNCH, offset, length) != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, os.strerror(errno))


class StreamTail:
    def __init__(self, *, path: pathlib.Path, stream: str, offset: int, limit: int,
                 times: local_stamps.Times | None = None, punch: bool = False) -> None:
        self.path = path
        self._punch = punch
        self._punched = 0  # bytes from the start already punched out
        self._times = times  # an adopted attempt's stamps: when the bytes up to each size were there
        self.stream = stream
        self.offset = offset
        self._limit = limit
        self._pending = b""
        self._fd: int | None = None

    def pump(self, sink: base.LogSink, *, final: bool = False) -> int:
        """Hand new whole lines to the sink; return the bytes read (0 = nothing new)."""
        if self._fd is None:
            try:
                self._fd = self._open()
            except FileNotFoundError:
                return 0
        read = 0
        at = time.time()
        for _ in range(_CHUNKS_PER_PUMP if not final else 1 << 62):
            chunk = os.pread(self._fd, CHUNK, self.offset + len(self._pending))
            if not chunk:
                break
            read += len(chunk)
            self._consume(self._pending + chunk, sink, at=at)
        if final and self._pending:
            self._emit(self._pending, sink, at=at)
            self.offset += len(self._pending)
            self._pending = b""
        if self._punch and self.offset - self._punched >= PUNCH_EVERY:
            self._punch_read()
        return read

    def _open(self) -> int:
        if self._punch:  # fallocate needs a writable fd; nothing is ever written through it
            try:
                return os.open(self.path, os.O_RDWR | os.O_CLOEXEC)
            except PermissionError:  # not ours to write (adopted from another user?): read only
                self._punch = False
        return os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)

    def _punch_read(self) -> None:
        assert self._fd is not None
        end = self.offset - self.offset % _PAGE
        try:
            punch_hole(self._fd, self._punched, end - self._punched)
        except OSError:
            self._punch = False  # not supported here: the file keeps its bytes until the end
            return
        self._punched = end

    def close(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = None

    def _consume(self, data: bytes, sink: base.LogSink, *, at: float) -> None:
        lines = data.split(b"\n")
        rest = lines.pop()
        if self._times is not None:
            self._consume_stamped(lines, sink, at=at)
        else:
            for line in lines:
                self._emit(line, sink, at=at)
        while len(rest) >= self._limit:
            cut = _boundary(rest, self._limit)
            self._emit(rest[:cut], sink, at=at)
            rest = rest[cut:]
        self.offset += len(data) - len(rest)
        self._pending = rest

    def _consume_stamped(self, lines: list[bytes], sink: base.LogSink, *, at: float) -> None:
        """Each line at the time the attempt's sampler first saw it (lines written since its last
        sample: ``at``); the stamps are dropped once the tail is past them."""
        assert self._times is not None
        end = self.offset
        for line in lines:
            end += len(line) + 1
            self._emit(line, sink, at=self._times.first_at(end, default=at))
        if self._times.passed(end):
            self._times = None

    def _emit(self, line: bytes, sink: base.LogSink, *, at: float) -> None:
        if line.endswith(b"\r"):
            line = line[:-1]
        while len(line) > self._limit:
            cut = _boundary(line, self._limit)
            sink.write(self.stream, line[:cut].decode("utf-8", "replace"), at=at)
            line = line[cut:]
        sink.write(self.stream, line.decode("utf-8", "replace"), at=at)


def _boundary(data: bytes, limit: int) -> int:
    """A cut point <= limit that does not split a UTF-8 character (when the data is UTF-8)."""
    cut = limit
    for _ in range(3):
        if cut > 1 and (data[cut] & 0xC0) == 0x80:
            cut -= 1
    return cut if (data[cut] & 0xC0) != 0x80 else limit
