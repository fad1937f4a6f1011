"""The on-disk line format of the log store, and the value a reader gets back.

One output line is one file line: ``<ISO-8601 UTC with microseconds>Z <stream> <text>``, so
``grep``, ``sort`` and ``tail -f`` work on the raw files. Text never contains ``\\n`` (the sink
splits on it); ``\\r`` and other control characters are kept as they are.
"""

from __future__ import annotations

import dataclasses
import datetime
import time

UTC = datetime.UTC


@dataclasses.dataclass(frozen=True, kw_only=True)
class LogLine:
    at: datetime.datetime
    stream: str  # 'stdout' | 'stderr' | 'system'
    text: str
    stage_id: str
    attempt: int
    cursor: str  # "<stage>/<attempt>/<byte offset after this line>": resume with follow(after=)


def make_cursor(*, stage_id: str, attempt: int, offset: int) -> str:
    return f"{stage_id}/{attempt}/{offset}"


def parse_cursor(cursor: str) -> tuple[str, int, int]:
    """``(stage_id, attempt, offset)``; ``ValueError`` says what a cursor looks like."""
    try:
        stage_id, attempt, offset = cursor.rsplit("/", 2)
        return stage_id, int(attempt), int(offset)
    except ValueError:
        expected = "expected 'stage/attempt/offset'"
        raise ValueError(f"{cursor!r} is not a log cursor ({expected})") from None


class Stamper:
    """Formats epoch seconds as the line prefix; caches the per-second part (it is the hot path)."""

    def __init__(self) -> None:
        self._second = -1
        self._prefix = ""

    def __call__(self, at: float) -> str:
        second = int(at)
        if second != self._second:
            self._second = second
            self._prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        micros = int((at - second) * 1_000_000)
        return f"{self._prefix}.{min(micros, 999_999):06d}Z"


def display(*, at: datetime.datetime, stage_id: str, attempt: int, stream: str, text: str) -> str:
    """A line as people and tools read it everywhere (the log download, ``kubeline logs``,
    ``kubeline k8s logs``): ``<ISO time> <stage>#<attempt> <stream> <text>``."""
    return f"{at.isoformat()} {stage_id}#{attempt} {stream} {text}"


def format_line(*, stamp: str, stream: str, text: str) -> bytes:
    return f"{stamp} {stream} {text}\n".encode("utf-8", "replace")


def parse_line(raw: bytes, *, stage_id: str, attempt: int, end_offset: int) -> LogLine:
    """One stored line (with or without its newline) as a ``LogLine``; tolerant of damage."""
    text = raw.rstrip(b"\n").decode("utf-8", "replace")
    stamp, _, rest = text.partition(" ")
    stream, _, body = rest.partition(" ")
    try:
        at = datetime.datetime.fromisoformat(stamp.rstrip("Z")).replace(tzinfo=UTC)
    except ValueError:  # a hand-edited or truncated file: keep the text, date it at the epoch
        at, stream, body = datetime.datetime.fromtimestamp(0, UTC), "stdout", text
    cursor = make_cursor(stage_id=stage_id, attempt=attempt, offset=end_offset)
    return LogLine(at=at, stream=stream, text=body, stage_id=stage_id, attempt=attempt,
                   cursor=cursor)
