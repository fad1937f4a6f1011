"""The log store port: what the engine, executors, API and CLI need from wherever logs live.

Two backends implement it: ``store.LogStore`` (files under the data dir, the embedded default)
and ``objects.ObjectLogStore`` (chunks in any S3-compatible bucket with an index in the
database, for several replicas without a shared volume). Readers never learn which one they
talk to; they get ``LogLine``s and, for a log that cannot be served whole, an ``Availability``
that says why in words.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from typing import Protocol

from kubeline.logs import lines

Until = asyncio.Event | Callable[[], Awaitable[bool]] | None


@dataclasses.dataclass(frozen=True, kw_only=True)
class AttemptKey:
    stage_id: str
    attempt: int


@dataclasses.dataclass(frozen=True, kw_only=True)
class Availability:
    """What a reader can expect of a run's stored log.

    ``missing``: attempts that ran but whose log is gone (deleted, or a volume that was replaced);
    ``delayed``: lines are written but not yet in the shared store (it is unreachable; they wait
    on the writing replica's disk and are uploaded when it answers again).
    """

    missing: tuple[AttemptKey, ...] = ()
    gone_reason: str = ""
    delayed: str = ""


class Sink(Protocol):
    """An attempt's writer (``executors.base.LogSink`` plus where a previous writer stopped)."""

    def write(self, stream: str, text: str, *, at: float | None = None) -> None: ...

    def close(self) -> None: ...

    async def stored_tail(self, *, max_bytes: int) -> bytes:
        """The last (up to ``max_bytes``) stored bytes of this attempt's log, in the line format
        of ``lines.format_line``: an adopting executor resumes after the last line it finds."""
        ...


class LogBackend(Protocol):
    def sink(self, *, run_id: str, stage_id: str, attempt: int, secrets: Iterable[str] = ()) -> Sink: ...

    def iter_lines(self, run_id: str, *, stage_id: str | None = None,
                   attempt: int | None = None) -> AsyncIterator[lines.LogLine]:
        """Every stored line of the run (or stage, or attempt), in time order."""
        ...

    def follow(self, run_id: str, *, stage_id: str | None = None, after: str | None = None,
               until: Until = None) -> AsyncIterator[list[lines.LogLine]]:
        """Stored lines, then new ones as they are written (by any replica), until ``until``: in
        batches as they are read (never empty, in time order), so a follower handles a big log
        a batch at a time (one write to an SSE client per batch, not one per line)."""
        ...

    async def availability(self, run_id: str, *, ran: Iterable[AttemptKey]) -> Availability:
        """Which of the attempts that ``ran`` have no stored log any more, and whether lines wait."""
        ...

    async def delete_logs(self, run_id: str) -> int:
        """Delete every stored line of the run (retention): bytes freed (files) or objects removed (s3)."""
        ...

    async def close(self) -> None:
        """Flush what waits to be stored (best effort) and release connections."""
        ...
