"""Attempt logs: a file per attempt, secrets masked before writing, fan-out to followers.

``LogStore(root).sink(...)`` is what executors write to; ``read`` and ``follow`` are what the
API, CLI and UI read from (``follow`` cursors resume an SSE stream after a reconnect).
"""

from __future__ import annotations

from kubeline.logs.lines import LogLine
from kubeline.logs.store import FileSink, LogStore

__all__ = ["FileSink", "LogLine", "LogStore"]
