"""The file log store: ``<root>/<run_id>/<stage_id>/<attempt>.log``, one line per output line.

Writers are ``FileSink``s (one per attempt); readers read the files, so a follower works the
same in another process (it polls for growth) as in this one (it is woken by the sink's flush
at once). Sinks buffer and flush once per event-loop turn: an executor hands over a whole chunk
of output synchronously, then yields, and the flush lands right after it, so followers see
lines within milliseconds without a syscall per line.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import heapq
import logging
import pathlib
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from typing import BinaryIO

from kubeline.logs import base, lines, masking

log = logging.getLogger(__name__)
Until = base.Until
_POLL = 0.1  # seconds between file checks when nothing in this process says "new lines"
_BATCH = 2000  # lines per file per follower turn: bounds a follower's memory on huge logs
_WAITING_MAX = 1000  # lines a sink holds while its file is being opened on a thread


class FileSink:
    """A ``LogSink`` that masks secrets and appends to one attempt's log file.

    With ``open_in_thread`` (the file log store's sinks) the file is made (its stage dir, then
    the file) on a thread, not on the event loop: on a busy journaling filesystem those two
    creates took 1-2 ms of the loop per attempt. Lines written meanwhile wait in memory and
    follow in order. ``close`` still leaves every line in the file: if the thread has not
    handed the file over by then, ``close`` opens it itself (and the thread closes its own).
    """

    def __init__(self, *, path: pathlib.Path, masker: masking.Masker,
                 on_flush: Callable[[], None], open_in_thread: bool = False) -> None:
        self.path = path
        self._file: BinaryIO | None = None  # opened by the first line: unused sinks hold no fd
        self._open_in_thread = open_in_thread
        self._opening = False
        self._lock = threading.Lock()  # the hand-over of the file the thread opened
        self._handed: BinaryIO | None = None
        self._abandoned = False  # the sink no longer wants the thread's file
        self._waiting: list[bytes] = []  # lines not yet handed to the file
        self._closed = False
        self._mask = masker
        self._on_flush = on_flush
        self._stamp = lines.Stamper()
        self._flush_pending = False

    def write(self, stream: str, text: str, *, at: float | None = None) -> None:
        if self._closed:
            return  # late lines of a killed attempt are dropped, not an error
        if self._file is None and not self._opening:
            self._open()
        stamp = self._stamp(time.time() if at is None else at)
        put = self._waiting.append if self._file is None else self._file.write
        for part in text.split("\n"):
            put(lines.format_line(stamp=stamp, stream=stream, text=self._mask(part)))
        if self._file is None and len(self._waiting) > _WAITING_MAX:
            self._claim()  # a flood of output while the thread is slow: memory stays bounded
        self._schedule_flush()

    def flush(self) -> None:
        self._flush_pending = False
        if self._file is not None:
            if self._waiting:
                self._file.write(b"".join(self._waiting))
                self._waiting.clear()
            self._file.flush()
            self._on_flush()

    def close(self) -> None:
        self._closed = True
        if self._file is None and self._opening:
            self._claim()
        if self._file is not None:
            self.flush()
            self._file.close()
            self._file = None

    async def stored_tail(self, *, max_bytes: int) -> bytes:
        return await asyncio.to_thread(read_tail, self.path, max_bytes)

    def _open(self) -> None:
        loop = None
        if self._open_in_thread:
            with contextlib.suppress(RuntimeError):
                loop = asyncio.get_running_loop()
        if loop is None:
            self._file = _open_log(self.path)
            return
        self._opening = True
        loop.run_in_executor(None, self._open_for_loop).add_done_callback(self._opened)

    def _claim(self) -> None:
        """The file now: the one the thread handed over, or (the thread is late) one opened here,
        the thread then closing its own."""
        with self._lock:
            self._file, self._handed = self._handed, None
            self._abandoned = self._file is None
        if self._file is None:
            self._file = _open_log(self.path)
        self.flush()

    def _open_for_loop(self) -> None:
        """On the thread: open the file and hand it over, unless the sink gave up on it."""
        file = _open_log(self.path)
        with self._lock:
            if not self._abandoned:
                self._handed = file
                return
        file.close()

    def _opened(self, opening: asyncio.Future[None]) -> None:
        failed = opening.cancelled() or opening.exception() is not None
        if self._closed or self._file is not None:
            return  # ``_claim`` took the file, or opened its own
        if failed:
            log.warning("cannot write the log %s: %s", self.path,
                        "cancelled" if opening.cancelled() else opening.exception())
            self._waiting.clear()
            self._opening, self._closed = False, True
            return
        with self._lock:
            self._file, self._handed = self._handed, None
        self.flush()

    def _schedule_flush(self) -> None:
        if self._flush_pending:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self.flush()
            return
        self._flush_pending = True
        loop.call_soon(self.flush)


def _open_log(path: pathlib.Path) -> BinaryIO:
    path.parent.mkdir(parents=True, exist_ok=True)
    return path.open("ab")


class LogStore:
    def __init__(self, root: pathlib.Path | str) -> None:
        self.root = pathlib.Path(root)
        self._wakeups: dict[str, set[asyncio.Event]] = {}

    def path(self, *, run_id: str, stage_id: str, attempt: int) -> pathlib.Path:
        return self.root / run_id / stage_id / f"{attempt}.log"

    def run_files(self, run_id: str) -> list[pathlib.Path]:
        """Every log file of a run (retention: size caps, deletion)."""
        return [path for _, _, path in self._files(run_id, stage_id=None, attempt=None)]

    def delete_run(self, run_id: str) -> int:
        """Delete a finished run's logs; the bytes freed. (Retention only: never for a live run.)"""
        import shutil

        run_dir = self.root / run_id
        if not run_dir.is_dir():
            return 0
        freed = sum(p.stat().st_size for p in run_dir.rglob("*") if p.is_file())
        shutil.rmtree(run_dir, ignore_errors=True)
        return freed

    def sink(self, *, run_id: str, stage_id: str, attempt: int,
             secrets: Iterable[str] = ()) -> FileSink:
        return FileSink(path=self.path(run_id=run_id, stage_id=stage_id, attempt=attempt),
                        masker=masking.Masker(secrets), on_flush=lambda: self._wake(run_id),
                        open_in_thread=True)

    async def iter_lines(self, run_id: str, *, stage_id: str | None = None,
                         attempt: int | None = None) -> AsyncIterator[lines.LogLine]:
        for count, line in enumerate(self.read(run_id, stage_id=stage_id, attempt=attempt)):
            yield line
            if count % 2000 == 1999:
                await asyncio.sleep(0)  # a huge log does not hold the event loop

    async def availability(self, run_id: str, *, ran: Iterable[base.AttemptKey]) -> base.Availability:
        missing = tuple(key for key in ran
                        if not self.path(run_id=run_id, stage_id=key.stage_id, attempt=key.attempt).is_file())
        reason = ""
        if missing:
            reason = (f"no log file under {self.root / run_id} for "
                      f"{', '.join(f'{k.stage_id}#{k.attempt}' for k in missing)}: deleted, or the data volume "
                      "was replaced (an emptyDir is lost with its pod); the S3 log store keeps logs across "
                      "pods and replicas (KUBELINE_LOG_STORE=s3)")
        return base.Availability(missing=missing, gone_reason=reason)

    async def delete_logs(self, run_id: str) -> int:
        return await asyncio.to_thread(self.delete_run, run_id)

    async def close(self) -> None:
        return None

    def read(self, run_id: str, *, stage_id: str | None = None,
             attempt: int | None = None) -> Iterator[lines.LogLine]:
        """Every stored line, merged in time order across files; streams, never loads a file."""
        files = self._files(run_id, stage_id=stage_id, attempt=attempt)
        yield from heapq.merge(*(_read_file(p, stage_id=s, attempt=a) for s, a, p in files),
                               key=lambda line: line.at)

    async def follow(self, run_id: str, *, stage_id: str | None = None, after: str | None = None,
                     until: Until = None) -> AsyncIterator[list[lines.LogLine]]:
        """Existing lines, then new ones as they are written, until ``until`` says the run is
        final (then a last read, so nothing written before that is missed); a batch per read.

        ``after`` is a ``LogLine.cursor``: its own file resumes exactly after that line; other
        files skip lines stamped at or before it (exact for one stage; across stages a line that
        is flushed later than a newer line of another stage could be skipped on resume).
        """
        offsets: dict[tuple[str, int], int] = {}
        not_after: datetime.datetime | None = None
        cursor_key = None
        if after is not None:
            cursor_stage, cursor_attempt, offset = lines.parse_cursor(after)
            cursor_key = (cursor_stage, cursor_attempt)
            offsets[cursor_key] = offset
            previous = _line_before(self.path(run_id=run_id, stage_id=cursor_stage,
                                              attempt=cursor_attempt), offset)
            not_after = previous.at if previous is not None else None
        wakeup = asyncio.Event()
        self._wakeups.setdefault(run_id, set()).add(wakeup)
        try:
            while True:
                final = await _is_final(until)
                wakeup.clear()
                batches = []
                full = False
                for stage, number, path in self._files(run_id, stage_id=stage_id, attempt=None):
                    key = (stage, number)
                    batch, offsets[key] = _read_batch(path, stage_id=stage, attempt=number,
                                                      offset=offsets.get(key, 0))
                    full = full or len(batch) >= _BATCH
                    if not_after is not None and key != cursor_key:
                        batch = [line for line in batch if line.at > not_after]
                    batches.append(batch)
                merged = list(heapq.merge(*batches, key=lambda line: line.at))
                if merged:
                    yield merged
                if full:
                    continue
                if final:
                    return
                with contextlib.suppress(TimeoutError):  # not wait_for: on 3.11 it can lose a cancel
                    async with asyncio.timeout(_POLL):
                        await wakeup.wait()
        finally:
            self._wakeups[run_id].discard(wakeup)
            if not self._wakeups[run_id]:
                del self._wakeups[run_id]

    def _wake(self, run_id: str) -> None:
        for event in self._wakeups.get(run_id, ()):
            event.set()

    def _files(self, run_id: str, *, stage_id: str | None,
               attempt: int | None) -> list[tuple[str, int, pathlib.Path]]:
        run_dir = self.root / run_id
        stages = [run_dir / stage_id] if stage_id is not None else _subdirs(run_dir)
        found = []
        for stage_dir in stages:
            if attempt is not None:
                candidates = [stage_dir / f"{attempt}.log"]
            else:
                candidates = list(stage_dir.glob("*.log")) if stage_dir.is_dir() else []
            for path in candidates:
                if path.stem.isdigit() and path.is_file():
                    found.append((stage_dir.name, int(path.stem), path))
        return sorted(found, key=lambda item: (item[0], item[1]))


def _subdirs(path: pathlib.Path) -> list[pathlib.Path]:
    return [p for p in path.iterdir() if p.is_dir()] if path.is_dir() else []


async def _is_final(until: Until) -> bool:
    if until is None:
        return False
    if isinstance(until, asyncio.Event):
        return until.is_set()
    return await until()


def _read_file(path: pathlib.Path, *, stage_id: str, attempt: int) -> Iterator[lines.LogLine]:
    offset = 0
    with path.open("rb") as file:
        for raw in file:
            if not raw.endswith(b"\n"):
                return  # a line still being written
            offset += len(raw)
            yield lines.parse_line(raw, stage_id=stage_id, attempt=attempt, end_offset=offset)


def _read_batch(path: pathlib.Path, *, stage_id: str, attempt: int,
                offset: int) -> tuple[list[lines.LogLine], int]:
    """Up to ``_BATCH`` complete lines from ``offset``, and the offset after the last of them."""
    batch: list[lines.LogLine] = []
    try:
        file = path.open("rb")
    except FileNotFoundError:
        return batch, offset
    with file:
        file.seek(offset)
        for raw in file:
            if not raw.endswith(b"\n"):
                break
            offset += len(raw)
            batch.append(lines.parse_line(raw, stage_id=stage_id, attempt=attempt,
                                          end_offset=offset))
            if len(batch) >= _BATCH:
                break
    return batch, offset


def _line_before(path: pathlib.Path, offset: int) -> lines.LogLine | None:
    """The stored line that ends at ``offset`` (reads backwards in small steps)."""
    window = 4096
    try:
        with path.open("rb") as file:
            while True:
                start = max(0, offset - window)
                file.seek(start)
                data = file.read(offset - start)
                cut = data.rfind(b"\n", 0, len(data) - 1)
                if cut >= 0 or start == 0:
                    raw = data[cut + 1:]
                    return lines.parse_line(raw, stage_id="", attempt=0, end_offset=offset) \
                        if raw else None
                window *= 4
    except FileNotFoundError:
        return None


def read_tail(path: pathlib.Path, max_bytes: int) -> bytes:
    """The last ``max_bytes`` of a file (b"" when there is none)."""
    try:
        with path.open("rb") as file:
            size = file.seek(0, 2)
            file.seek(max(0, size - max_bytes))
            return file.read()
    except FileNotFoundError:
        return b""
