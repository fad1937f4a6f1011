"""Cleanup after local attempts, on a thread of its own instead of the event loop.

What an ended attempt leaves is deleted once its result is stored: its work dir (a handful of
files) and, without a cgroup, strays found by reading ``/proc`` (``local_limits.kill_marked``).
On a journaling filesystem of a busy machine those unlinks took 3-9 ms per attempt; on the
event loop that was 3-9 ms of every stage of a chain, since the next stage's start waited for
the loop. A thread of its own does it instead: the work is system calls, which release the GIL,
so the loop runs meanwhile. One thread: at most one more thread wants the GIL, and cleanups run
in the order they were asked for. ``settle`` waits for those asked for so far.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import threading
from collections.abc import Callable

log = logging.getLogger(__name__)


class Janitor:
    def __init__(self) -> None:
        self._pool: concurrent.futures.ThreadPoolExecutor | None = None
        self._pending: set[concurrent.futures.Future[None]] = set()
        self._lock = threading.Lock()

    def submit(self, job: Callable[[], None]) -> None:
        """Run ``job`` on the cleanup thread (errors are logged: a cleanup is best effort)."""
        with self._lock:
            if self._pool is None:
                self._pool = concurrent.futures.ThreadPoolExecutor(
                    max_workers=1, thread_name_prefix="kubeline-cleanup")
            future = self._pool.submit(job)
            self._pending.add(future)
        future.add_done_callback(self._done)

    async def settle(self) -> None:
        """Until every cleanup asked for so far has run."""
        while True:
            with self._lock:
                pending = list(self._pending)
            if not pending:
                return
            await asyncio.wait([asyncio.wrap_future(f) for f in pending])

    def close(self) -> None:
        """Run what is queued, then stop the thread (a later ``submit`` starts a new one)."""
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True)

    def _done(self, future: concurrent.futures.Future[None]) -> None:
        with self._lock:
            self._pending.discard(future)
        if not future.cancelled() and future.exception() is not None:
            log.warning("cleanup after an attempt failed: %s", future.exception())
