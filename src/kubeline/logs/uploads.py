"""The writing side of the object-store backend: spool on local disk, upload in chunks.

A sink writes its lines (masked, stamped, one ``FileSink``) to a spool file on this replica's
disk. The uploader cuts what is new into a chunk every ``chunk_seconds`` (sooner past
``chunk_bytes``, and at once when the attempt's sink closes), puts it in the bucket, then
records it in the index. When the bucket does not answer, the attempt is not disturbed: its
lines keep going to the spool, the index says the log is delayed (readers on every replica show
it), and the uploader retries with a growing pause until the store answers, then clears the
delay. A spool file left by a process that died is uploaded by the next start on that disk.

Each chunk is ``<prefix><run>/<stage>/<attempt>/<seq>.log``; its byte offsets continue those
of the chunks before it, so cursors are the same as the file backend's.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime as dt
import logging
import pathlib
from collections.abc import Callable

from kubeline.logs import buckets, index, lines

log = logging.getLogger(__name__)
_MAX_PAUSE = 5.0  # seconds between upload tries while the bucket does not answer


@dataclasses.dataclass(kw_only=True)
class Stream:
    """One attempt log written on this replica: the spool file and what of it is uploaded."""

    run_id: str
    stage_id: str
    attempt: int
    path: pathlib.Path
    spool_offset: int = 0  # bytes of the spool file already in chunks
    next_seq: int | None = None  # None until read from the index (continues an adopted log)
    byte_next: int = 0  # log offset of the next chunk
    line_next: int = 0
    closed: bool = False
    delayed: bool = False
    last_upload: float = 0.0

    @property
    def key(self) -> tuple[str, str, int]:
        return self.run_id, self.stage_id, self.attempt

    @property
    def state_path(self) -> pathlib.Path:
        return self.path.with_suffix(".uploaded")

    def pending(self) -> int:
        try:
            return self.path.stat().st_size - self.spool_offset
        except FileNotFoundError:
            return 0


class Uploader:
    def __init__(self, *, bucket: buckets.Bucket, chunk_index: index.ChunkIndex, prefix: str, writer: str,
                 chunk_seconds: float, chunk_bytes: int,
                 on_chunk: Callable[[str], None]) -> None:
        self.bucket = bucket
        self.index = chunk_index
        self.prefix = prefix
        self.writer = writer
        self.chunk_seconds = chunk_seconds
        self.chunk_bytes = chunk_bytes
        self.streams: dict[tuple[str, str, int], Stream] = {}
        self._on_chunk = on_chunk
        self._kick = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._pause = 0.0
        self._lock = asyncio.Lock()

    def stream(self, *, run_id: str, stage_id: str, attempt: int, path: pathlib.Path) -> Stream:
        key = (run_id, stage_id, attempt)
        found = self.streams.get(key)
        if found is None:
            found = self.streams[key] = Stream(run_id=run_id, stage_id=stage_id, attempt=attempt, path=path,
                                               spool_offset=_read_offset(path.with_suffix(".uploaded")))
        found.closed = False
        return found

    def kick(self) -> None:
        self._kick.set()
        if self._task is None or self._task.done():
            with contextlib.suppress(RuntimeError):  # no loop (a sync caller): the next kick starts it
                self._task = asyncio.get_running_loop().create_task(self._loop())

    def recover(self, spool: pathlib.Path) -> None:
        """Take over spool files a previous process on this disk left (uploaded, then deleted)."""
        for path in spool.glob("*/*/*.log"):
            if path.stem.isdigit():
                stream = self.stream(run_id=path.parent.parent.name, stage_id=path.parent.name,
                                     attempt=int(path.stem), path=path)
                stream.closed = True
        if self.streams:
            self.kick()

    async def drain(self, *, within: float) -> bool:
        """Upload everything now (at shutdown); False if the bucket did not take it all in time."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(within):
                while self.streams:
                    if not await self._pass(force=True):
                        await asyncio.sleep(0.2)
                    else:
                        await asyncio.sleep(0)
        return not self.streams

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _loop(self) -> None:
        while self.streams:
            ok = await self._pass(force=False)
            self._pause = 0.0 if ok else min(_MAX_PAUSE, max(0.25, self._pause * 2))
            wait = self._pause or self.chunk_seconds
            self._kick.clear()
            with contextlib.suppress(TimeoutError):  # not wait_for: on 3.11 it can lose a cancel
                async with asyncio.timeout(wait if not ok else self._next_due(wait)):
                    await self._kick.wait()

    def _next_due(self, default: float) -> float:
        loop = asyncio.get_running_loop()
        dues = [s.last_upload + self.chunk_seconds - loop.time() for s in self.streams.values() if s.pending()]
        return max(0.01, min(dues)) if dues else default

    async def _pass(self, *, force: bool) -> bool:
        """One round over the streams; False when the bucket or index failed."""
        async with self._lock:  # the loop and a drain at shutdown never upload the same lines twice
            return await self._pass_locked(force=force)

    async def _pass_locked(self, *, force: bool) -> bool:
        now = asyncio.get_running_loop().time()
        for stream in list(self.streams.values()):
            pending = stream.pending()
            due = (force or stream.closed or pending >= self.chunk_bytes
                   or (pending > 0 and now - stream.last_upload >= self.chunk_seconds))
            if not due:
                continue
            try:
                while await self._upload_one(stream):
                    pass
            except (buckets.Unreachable, OSError) as exc:
                await self._delayed(stream, str(exc))
                return False
            except Exception as exc:  # the index (database) failed: keep the spool, retry
                log.warning("log index write for %s failed: %s", "/".join(map(str, stream.key)), exc)
                stream.next_seq = None  # read the index again: the chunk may or may not be in it
                return False
            if stream.delayed:
                stream.delayed = False
                await self.index.set_delay(run_id=stream.run_id, stage_id=stream.stage_id, attempt=stream.attempt,
                                           writer=self.writer, reason=None)
                log.info("object store answers again: uploaded the delayed log of %s", "/".join(map(str, stream.key)))
            if stream.closed and stream.pending() <= 0:
                self._forget(stream)
        return True

    async def _upload_one(self, stream: Stream) -> bool:
        """Upload the next chunk of complete lines; False when nothing is left."""
        data = await asyncio.to_thread(_read_lines, stream.path, stream.spool_offset, self.chunk_bytes)
        if not data:
            return False
        if stream.next_seq is None:
            last = await self.index.last_chunk(run_id=stream.run_id, stage_id=stream.stage_id, attempt=stream.attempt)
            if last is not None:
                stream.next_seq, stream.byte_next, stream.line_next = last.seq + 1, last.byte_end, \
                    last.line_start + last.line_count
            else:
                stream.next_seq = 0
        parts = data.split(b"\n")[:-1]
        chunk = index.Chunk(
            run_id=stream.run_id, stage_id=stream.stage_id, attempt=stream.attempt, seq=stream.next_seq,
            object_key=f"{self.prefix}{stream.run_id}/{stream.stage_id}/{stream.attempt}/{stream.next_seq:08d}.log",
            byte_start=stream.byte_next, byte_count=len(data), line_start=stream.line_next, line_count=len(parts),
            first_at=_stamp(parts[0]), last_at=_stamp(parts[-1]))
        await self.bucket.put(chunk.object_key, data)
        try:
            await self.index.add_chunk(chunk)
        except Exception:
            # The insert may have committed before the error reached us: look before retrying.
            last = await self.index.last_chunk(run_id=stream.run_id, stage_id=stream.stage_id, attempt=stream.attempt)
            if last is None or (last.seq, last.byte_start, last.byte_count) != (chunk.seq, chunk.byte_start,
                                                                                 chunk.byte_count):
                raise
        stream.next_seq += 1
        stream.byte_next += chunk.byte_count
        stream.line_next += chunk.line_count
        stream.spool_offset += len(data)
        stream.last_upload = asyncio.get_running_loop().time()
        await asyncio.to_thread(_write_offset, stream.state_path, stream.spool_offset)
        self._on_chunk(stream.run_id)
        return True

    async def _delayed(self, stream: Stream, reason: str) -> None:
        if not stream.delayed:
            stream.delayed = True
            log.warning("log of %s waits on local disk: %s", "/".join(map(str, stream.key)), reason)
            with contextlib.suppress(Exception):  # the database may be down too: retried next pass
                await self.index.set_delay(run_id=stream.run_id, stage_id=stream.stage_id, attempt=stream.attempt,
                                           writer=self.writer, reason=reason)

    def _forget(self, stream: Stream) -> None:
        self.streams.pop(stream.key, None)
        for path in (stream.path, stream.state_path):
            path.unlink(missing_ok=True)
        with contextlib.suppress(OSError):
            stream.path.parent.rmdir()
            stream.path.parent.parent.rmdir()


def _read_lines(path: pathlib.Path, offset: int, limit: int) -> bytes:
    """Up to ``limit`` bytes of whole lines from ``offset`` (one line longer than that whole)."""
    try:
        with path.open("rb") as file:
            file.seek(offset)
            data = file.read(limit)
            cut = data.rfind(b"\n")
            if cut < 0 and data:
                rest = file.readline()
                return data + rest if rest.endswith(b"\n") else b""
            return data[:cut + 1]
    except FileNotFoundError:
        return b""


def _read_offset(path: pathlib.Path) -> int:
    with contextlib.suppress(OSError, ValueError):
        return int(path.read_text())
    return 0


def _write_offset(path: pathlib.Path, offset: int) -> None:
    temp = path.with_suffix(".tmp")
    temp.write_text(str(offset))
    temp.replace(path)


def _stamp(raw: bytes) -> dt.datetime:
    return lines.parse_line(raw, stage_id="", attempt=0, end_offset=0).at
