"""The chunk index port of the object-store backend: which chunks an attempt log has, where
they sit in the log (byte and line offsets), and which logs wait to be uploaded.

It lives in the database (``storage.sql.log_index``), so every replica reads the same index;
the objects themselves are in the bucket.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from typing import Protocol


@dataclasses.dataclass(frozen=True, kw_only=True)
class Chunk:
    run_id: str
    stage_id: str
    attempt: int
    seq: int  # 0, 1, 2, ... per attempt
    object_key: str
    byte_start: int  # offset of the chunk's first byte in the attempt's log
    byte_count: int
    line_start: int  # lines of the attempt's log before this chunk
    line_count: int
    first_at: dt.datetime
    last_at: dt.datetime

    @property
    def byte_end(self) -> int:
        return self.byte_start + self.byte_count


@dataclasses.dataclass(frozen=True, kw_only=True)
class Delay:
    stage_id: str
    attempt: int
    writer: str
    since: dt.datetime
    reason: str


class ChunkIndex(Protocol):
    async def add_chunk(self, chunk: Chunk) -> None: ...

    async def chunks(self, run_id: str, *, stage_id: str | None = None,
                     attempt: int | None = None) -> list[Chunk]:
        """Ordered by stage, attempt, seq."""
        ...

    async def last_chunk(self, *, run_id: str, stage_id: str, attempt: int) -> Chunk | None: ...

    async def set_delay(self, *, run_id: str, stage_id: str, attempt: int, writer: str,
                        reason: str | None) -> None:
        """Record (``reason``) or clear (None) that the attempt's lines wait on ``writer``'s disk."""
        ...

    async def delays(self, run_id: str) -> list[Delay]: ...

    async def delete_run(self, run_id: str) -> None: ...
