"""Cleanup after local attempts, on a thread of its own instead of the event loop.

What an ended attempt leaves is deleted once its result is stored: its work dir (a handful of
files) and, without a cgroup, strays found by reading ``/proc`` (``local_limits.kill_marked``).
On a journaling filesystem of a busy machine those unlinks took 3-9 ms per attempt; on the
event loop that was 3-9 ms of every stage of a chain, since the next stage's start waited for
the loop. A thread of its own does it instead: the work is system calls, which release the GIL,
so the loop runs meanwhile. One thread: at most one more thread wants the GIL, and cleanups run
in the order they were asked for. They are handed over in batches, ``GATHER`` seconds after the
first of a batch: waking the thread costs the loop too (on a loaded machine the woken thread
often takes the loop's CPU), so once per batch instead of once per attempt. The strays of a
batch's attempts are looked for in one scan of ``/proc`` (``local_limits.kill_all_marked``)
before its jobs run: a fan-out of 100 ends together, and a scan per attempt read each of its
processes' environments about 100 times (~1 ms of CPU per attempt, the GIL held meanwhile).
``settle`` hands over what waits and waits for everything asked for so far.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import threading
from collections.abc import Callable

from kubeline.executors import local_limits

log = logging.getLogger(__name__)


GATHER = 0.02  # seconds a cleanup waits for others to go to the thread with it


class Janitor:
    def __init__(self) -> None:
        self._pool: concurrent.futures.ThreadPoolExecutor | None = None
        self._pending: set[concurrent.futures.Future[None]] = set()
        self._lock = threading.Lock()
        self._gathered: list[Callable[[], None]] = []
        self._strays: dict[str, int | None] = {}  # attempt id -> its first pid (see kill_marked)
        self._handing: asyncio.TimerHandle | None = None

    def submit(self, job: Callable[[], None], *, strays: tuple[str, int | None] | None = None) -> None:
        """Run ``job`` on the cleanup thread soon (errors are logged: a cleanup is best effort),
        after killing the ``strays`` of an attempt (its id and first pid, see ``kill_marked``)."""
        self._gathered.append(job)
        if strays is not None:
            self._strays[strays[0]] = strays[1]
        if self._handing is None:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                self._hand_over()
                return
            self._handing = loop.call_later(GATHER, self._hand_over)

    async def settle(self) -> None:
        """Until every cleanup asked for so far has run."""
        self._hand_over()
        while True:
            with self._lock:
                pending = list(self._pending)
            if not pending:
                return
            await asyncio.wait([asyncio.wrap_future(f) for f in pending])

    def close(self) -> None:
        """Run what is asked for, then stop the thread (a later ``submit`` starts a new one)."""
        self._hand_over()
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True)

    def _hand_over(self) -> None:
        if self._handing is not None:
            self._handing.cancel()
            self._handing = None
        jobs, self._gathered = self._gathered, []
        strays, self._strays = self._strays, {}
        if not jobs:
            return
        with self._lock:
            if self._pool is None:
                self._pool = concurrent.futures.ThreadPoolExecutor(
                    max_workers=1, thread_name_prefix="kubeline-cleanup")
            future = self._pool.submit(_run_all, jobs, strays)
            self._pending.add(future)
        future.add_done_callback(self._done)

    def _done(self, future: concurrent.futures.Future[None]) -> None:
        with self._lock:
            self._pending.discard(future)


def _run_all(jobs: list[Callable[[], None]], strays: dict[str, int | None]) -> None:
    try:
        local_limits.kill_all_marked(strays)
    except Exception:
        log.exception("looking for what attempts left running failed")
    for job in jobs:
        try:
            job()
        except Exception:
            log.exception("cleanup after an attempt failed")
