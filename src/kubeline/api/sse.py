"""Server-sent events: wire format, and a shared "is this run final?" answer for followers.

Fifty followers of one run must not each ask the database ten times a second whether it has
finished, so ``RunWatch`` caches the answer per run for a short time and shares one query in
flight. A final answer is kept (a run never leaves a final state).
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

from kubeline.domain import states
from kubeline.storage import base as storage

MEDIA_TYPE = "text/event-stream"
HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


def event(*, data: Any, event_type: str, event_id: str | None = None) -> bytes:
    """One SSE frame. ``data`` is JSON on one line, so it never needs splitting."""
    return frame(data_json=json.dumps(data, default=str).encode(), event_type=event_type, event_id=event_id)


def frame(*, data_json: bytes, event_type: str, event_id: str | None = None) -> bytes:
    """One SSE frame of data already serialized as one line of JSON."""
    head = f"id: {event_id}\n" if event_id is not None else ""
    return f"{head}event: {event_type}\ndata: ".encode() + data_json + b"\n\n"


def retry_hint(milliseconds: int = 1000) -> bytes:
    return f"retry: {milliseconds}\n\n".encode()


class RunWatch:
    def __init__(self, *, store: storage.Store, ttl: float = 0.25, keep: int = 4096) -> None:
        self.store = store
        self.ttl = ttl
        self.keep = keep
        self._final: dict[str, states.RunState] = {}
        self._last: dict[str, states.RunState] = {}
        self._checked: dict[str, float] = {}
        self._inflight: dict[str, asyncio.Future[states.RunState]] = {}

    async def state(self, run_id: str) -> states.RunState:
        if run_id in self._final:
            return self._final[run_id]
        pending = self._inflight.get(run_id)
        if pending is None:
            if time.monotonic() - self._checked.get(run_id, -1e9) < self.ttl and run_id in self._last:
                return self._last[run_id]
            pending = asyncio.ensure_future(self._fetch(run_id))
            self._inflight[run_id] = pending
        return await asyncio.shield(pending)

    async def is_final(self, run_id: str) -> bool:
        return states.is_final(await self.state(run_id))

    async def _fetch(self, run_id: str) -> states.RunState:
        try:
            state = (await self.store.get_run(run_id)).state
        finally:
            self._inflight.pop(run_id, None)
        self._checked[run_id] = time.monotonic()
        if len(self._last) > self.keep:
            self._last.clear()
            self._checked = {run_id: self._checked[run_id]}
        self._last[run_id] = state
        if states.is_final(state):
            if len(self._final) > self.keep:
                self._final.clear()
            self._final[run_id] = state
        return state
