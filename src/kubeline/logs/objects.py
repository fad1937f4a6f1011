"""The object-store backend of the log store: chunks in an S3-compatible bucket, an index of
them in the database, for several replicas without a shared volume.

Writers spool to local disk and upload chunks (``uploads``). Readers list the run's chunks in
the index, fetch them, and add what this replica has spooled but not yet uploaded, so a reader
on the writing replica sees lines at once and one on any other replica within a chunk interval.
Followers are woken in this process when a chunk or a line is written here, and for chunks
written by other replicas by the LOGS wake-up the index publishes with each chunk it records
(PostgreSQL NOTIFY through the store's listener); ``follow_poll`` is only a slow safety net.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import heapq
import pathlib
import shutil
from collections.abc import AsyncIterator, Iterable
from typing import Any

from kubeline.domain import errors
from kubeline.logs import base, buckets, index, lines, masking, store, uploads
from kubeline.storage import wakeups as wakeups_

_TAIL_CHUNKS = 64  # at most this many chunks are fetched for an adopting executor's tail


class ObjectSink:
    """Masks, stamps and spools lines (a ``FileSink``); the uploader takes them from there."""

    def __init__(self, *, owner: ObjectLogStore, stream: uploads.Stream, masker: masking.Masker) -> None:
        self._owner = owner
        self._stream = stream
        self._file = store.FileSink(path=stream.path, masker=masker, on_flush=self._flushed)

    @property
    def path(self) -> pathlib.Path:
        return self._stream.path

    def write(self, stream: str, text: str, *, at: float | None = None) -> None:
        self._file.write(stream, text, at=at)

    def close(self) -> None:
        self._file.close()
        self._stream.closed = True
        self._owner.uploader.kick()

    async def stored_tail(self, *, max_bytes: int) -> bytes:
        chunks = await self._owner.index.chunks(self._stream.run_id, stage_id=self._stream.stage_id,
                                                attempt=self._stream.attempt)
        picked: list[index.Chunk] = []
        size = 0
        for chunk in reversed(chunks[-_TAIL_CHUNKS:]):
            picked.insert(0, chunk)
            size += chunk.byte_count
            if size >= max_bytes:
                break
        data = b"".join([await self._owner.fetch(chunk) for chunk in picked])
        data += await asyncio.to_thread(_spooled, self._stream.path, self._stream.spool_offset)
        return data[-max_bytes:]

    def _flushed(self) -> None:
        self._owner.wake(self._stream.run_id)
        self._owner.uploader.kick()


class ObjectLogStore:
    def __init__(self, *, bucket: buckets.Bucket, chunk_index: index.ChunkIndex, spool_dir: pathlib.Path,
                 prefix: str = "", writer: str = "kubeline", chunk_seconds: float = 1.0,
                 chunk_bytes: int = 4 * 1024 * 1024, follow_poll: float = 10.0,
                 wakeups: wakeups_.Wakeups | None = None) -> None:
        self.bucket = bucket
        self.index = chunk_index
        self.spool_dir = spool_dir
        self.prefix = prefix
        self.follow_poll = follow_poll
        self.wakeups = wakeups or wakeups_.Wakeups()  # LOGS: a chunk was indexed (by any replica)
        self.uploader = uploads.Uploader(bucket=bucket, chunk_index=chunk_index, prefix=prefix, writer=writer,
                                         chunk_seconds=chunk_seconds, chunk_bytes=chunk_bytes, on_chunk=self.wake)
        self._wakeups: dict[str, set[asyncio.Event]] = {}
        self._recovered = False

    # writing ---------------------------------------------------------------------------------
    def sink(self, *, run_id: str, stage_id: str, attempt: int, secrets: Iterable[str] = ()) -> ObjectSink:
        self._recover_once()
        path = self.spool_dir / run_id / stage_id / f"{attempt}.log"
        stream = self.uploader.stream(run_id=run_id, stage_id=stage_id, attempt=attempt, path=path)
        return ObjectSink(owner=self, stream=stream, masker=masking.Masker(secrets))

    def _recover_once(self) -> None:
        if not self._recovered:
            self._recovered = True
            self.uploader.recover(self.spool_dir)

    async def close(self) -> None:
        """Upload what is spooled (a few seconds at most); what is left is uploaded by the next
        start on this disk."""
        await self.uploader.drain(within=5.0)
        await self.uploader.stop()

    # reading ---------------------------------------------------------------------------------
    async def fetch(self, chunk: index.Chunk) -> bytes:
        try:
            return await self.bucket.get(chunk.object_key)
        except buckets.Missing:
            raise errors.GoneError(
                f"chunk {chunk.seq} of the log of {chunk.stage_id}#{chunk.attempt} is missing from "
                f"{self.bucket.where} (key {chunk.object_key!r}: deleted outside Kubeline?)") from None
        except buckets.Unreachable as exc:
            raise errors.ExecutorError(f"cannot read the log: {exc}; try again when it answers") from None

    async def iter_lines(self, run_id: str, *, stage_id: str | None = None,
                         attempt: int | None = None) -> AsyncIterator[lines.LogLine]:
        self._recover_once()
        batch = await self._new_lines(run_id, stage_id=stage_id, attempt=attempt, offsets={})
        for line in batch:
            yield line

    async def follow(self, run_id: str, *, stage_id: str | None = None, after: str | None = None,
                     until: base.Until = None) -> AsyncIterator[list[lines.LogLine]]:
        offsets: dict[tuple[str, int], int] = {}
        not_after = None
        cursor_key = None
        if after is not None:
            cursor_stage, cursor_attempt, offset = lines.parse_cursor(after)
            cursor_key = (cursor_stage, cursor_attempt)
            offsets[cursor_key] = offset
            not_after = await self._time_at(run_id, stage_id=cursor_stage, attempt=cursor_attempt, offset=offset)
        wakeup = asyncio.Event()
        self._wakeups.setdefault(run_id, set()).add(wakeup)
        try:
            async with self.wakeups.subscribe(wakeups_.Channel.LOGS, key=run_id) as indexed, \
                    self.wakeups.subscribe(wakeups_.Channel.EVENTS, key=run_id) as changed:
                while True:
                    final = await store._is_final(until)
                    wakeup.clear()
                    batch = [line for line in await self._new_lines(run_id, stage_id=stage_id, attempt=None,
                                                                    offsets=offsets)
                             if not_after is None or (line.stage_id, line.attempt) == cursor_key
                             or line.at > not_after]
                    if batch:
                        yield batch
                    if final:
                        return
                    await self.wait_for_chunks(run_id, wakeup, pushed=[indexed, changed], until=until)
        finally:
            self._wakeups[run_id].discard(wakeup)
            if not self._wakeups[run_id]:
                del self._wakeups[run_id]

    async def wait_for_chunks(self, run_id: str, wakeup: asyncio.Event, *,
                              pushed: list[wakeups_.Waiter] | None = None, until: base.Until = None) -> None:
        """Until a line is written here, a chunk of the run is indexed or the run changed state
        (by any replica: the LOGS and EVENTS wake-ups in ``pushed``), ``until`` is set, or
        ``follow_poll`` seconds passed (the safety net for a missed wake-up)."""
        waits: list[asyncio.Future[Any]] = [asyncio.ensure_future(wakeup.wait())]
        waits += [asyncio.ensure_future(waiter.wait(within=self.follow_poll)) for waiter in pushed or ()]
        if isinstance(until, asyncio.Event):
            waits.append(asyncio.ensure_future(until.wait()))
        try:
            await asyncio.wait(waits, timeout=self.follow_poll, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in waits:
                task.cancel()
            await asyncio.gather(*waits, return_exceptions=True)

    def wake(self, run_id: str) -> None:
        for event in self._wakeups.get(run_id, ()):
            event.set()

    async def _new_lines(self, run_id: str, *, stage_id: str | None, attempt: int | None,
                         offsets: dict[tuple[str, int], int]) -> list[lines.LogLine]:
        """Lines after ``offsets`` (per attempt; advanced), from chunks then this replica's spool,
        merged in time order."""
        per_attempt: dict[tuple[str, int], list[lines.LogLine]] = {}
        indexed_end: dict[tuple[str, int], int] = {}
        for chunk in await self.index.chunks(run_id, stage_id=stage_id, attempt=attempt):
            key = (chunk.stage_id, chunk.attempt)
            indexed_end[key] = chunk.byte_end
            done = offsets.get(key, 0)
            if chunk.byte_end <= done:
                continue
            data = await self.fetch(chunk)
            found = per_attempt.setdefault(key, [])
            found.extend(_parse(data, stage_id=chunk.stage_id, attempt=chunk.attempt, base=chunk.byte_start,
                                skip_to=done))
            offsets[key] = chunk.byte_end
        # What this replica spooled: the spool file holds every byte written here (uploaded or
        # not), and the log offset of its byte ``spool_offset`` is ``byte_next`` (the end of the
        # indexed chunks while this process has uploaded none of it yet).
        local = [(s, s.spool_offset,
                  s.byte_next if s.next_seq is not None else indexed_end.get((s.stage_id, s.attempt), 0))
                 for key, s in self.uploader.streams.items() if key[0] == run_id
                 and (stage_id is None or s.stage_id == stage_id) and (attempt is None or s.attempt == attempt)]
        for stream, spool_offset, byte_next in local:
            key = (stream.stage_id, stream.attempt)
            done = offsets.get(key, 0)
            position = spool_offset - (byte_next - done)
            if position < 0:
                continue
            data = await asyncio.to_thread(_spooled, stream.path, position)
            per_attempt.setdefault(key, []).extend(
                _parse(data, stage_id=stream.stage_id, attempt=stream.attempt, base=done, skip_to=done))
            offsets[key] = done + len(data)
        return list(heapq.merge(*per_attempt.values(), key=lambda line: line.at))

    async def _time_at(self, run_id: str, *, stage_id: str, attempt: int, offset: int) -> dt.datetime | None:
        probe: dict[tuple[str, int], int] = {}
        found = None
        for line in await self._new_lines(run_id, stage_id=stage_id, attempt=attempt, offsets=probe):
            if lines.parse_cursor(line.cursor)[2] <= offset:
                found = line.at
        return found

    # state and retention ---------------------------------------------------------------------
    async def availability(self, run_id: str, *, ran: Iterable[base.AttemptKey]) -> base.Availability:
        have = {(c.stage_id, c.attempt) for c in await self.index.chunks(run_id)}
        have.update((s, a) for (r, s, a), stream in self.uploader.streams.items() if r == run_id and stream.pending())
        delays = await self.index.delays(run_id)
        waiting = {(d.stage_id, d.attempt) for d in delays}
        missing = tuple(k for k in ran if (k.stage_id, k.attempt) not in have | waiting)
        reason = ""
        if missing:
            reason = (f"no chunk of {', '.join(f'{k.stage_id}#{k.attempt}' for k in missing)} in the log index "
                      f"of {self.bucket.where} (deleted by retention, or never uploaded)")
        delayed = ""
        if delays:
            first = delays[0]
            delayed = (f"{len(delays)} attempt log(s) wait on {first.writer}'s disk since "
                       f"{first.since.isoformat(timespec='seconds')} ({first.reason}); they are uploaded when the "
                       "object store answers again")
        return base.Availability(missing=missing, gone_reason=reason, delayed=delayed)

    async def delete_logs(self, run_id: str) -> int:
        """Retention: the run's objects (every key under its prefix), index rows and spool."""
        for key in [k for k in self.uploader.streams if k[0] == run_id]:
            self.uploader.streams.pop(key, None)
        await asyncio.to_thread(shutil.rmtree, self.spool_dir / run_id, True)
        removed = await self.bucket.delete_prefix(f"{self.prefix}{run_id}/")
        await self.index.delete_run(run_id)
        return removed


def _parse(data: bytes, *, stage_id: str, attempt: int, base: int, skip_to: int) -> list[lines.LogLine]:
    """The whole lines of ``data`` (which starts at log offset ``base``) ending after ``skip_to``."""
    found = []
    offset = base
    start = 0
    while (end := data.find(b"\n", start)) >= 0:
        offset += end + 1 - start
        if offset > skip_to:
            found.append(lines.parse_line(data[start:end + 1], stage_id=stage_id, attempt=attempt, end_offset=offset))
        start = end + 1
    return found


def _spooled(path: pathlib.Path, offset: int) -> bytes:
    """Whole lines of the spool file from ``offset``."""
    try:
        with path.open("rb") as file:
            file.seek(offset)
            data = file.read()
    except FileNotFoundError:
        return b""
    return data[:data.rfind(b"\n") + 1]
