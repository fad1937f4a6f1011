"""Pushed wake-ups between processes: publish a hint on a channel, wake every waiter on it.

A wake-up says "look again", never "here is the data": waiters re-read the store, so a lost or
duplicated wake-up costs latency, not correctness, and every waiter keeps a slow poll (seconds)
as a safety net. The store publishes the wake-ups of its own writes:

- on PostgreSQL, ``NOTIFY`` inside the writing transaction (delivered only if it commits) and one
  ``LISTEN`` connection per process (``storage.sql.listener``) feeds ``Wakeups.deliver``;
- on SQLite (one process), ``deliver`` after the commit, in process.

Use (any layer that holds the store)::

    async with store.wakeups.subscribe(wakeups.Channel.EVENTS, key=run_id) as waiter:
        while ...:
            keys = await waiter.wait(within=5.0)  # the keys published since the last wait
    await store.wakeups.publish(wakeups.Channel.LOGS, key=f"{run_id}/{stage}/{attempt}")

``publish`` is for wake-ups that no store write carries (a log line written by another
replica); it reaches every process, through ``NOTIFY`` on PostgreSQL. Keys are short strings
(a run id, an attempt id, ...; at most 7,000 bytes); ``key=None`` subscribes to every key.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable

MAX_KEY_BYTES = 7_000  # PostgreSQL NOTIFY payloads are limited to 8,000 bytes


class Channel(enum.StrEnum):
    DISPATCH = "kubeline_dispatch"  # a run was queued or a run slot freed: claim now
    CANCEL = "kubeline_cancel"  # key: run id; its cancellation was requested
    EVENTS = "kubeline_events"  # key: run id; a state change of the run was recorded
    UPLOAD = "kubeline_upload"  # key: attempt id; an attempt's upload (outputs, log) arrived
    LOGS = "kubeline_logs"  # key: chosen by the log store; log lines were written elsewhere
    ACCOUNTS = "kubeline_accounts"  # a token was revoked, a user changed: identities cached by auth are stale


class Waiter:
    """One subscriber: collects the keys published on its channel until it ``wait``s."""

    def __init__(self, *, channel: Channel, key: str | None) -> None:
        self.channel = channel
        self.key = key
        self.loop = asyncio.get_running_loop()
        self._event = asyncio.Event()
        self._keys: set[str] = set()

    def _wake(self, key: str) -> None:
        self._keys.add(key)
        self._event.set()

    def take(self) -> set[str]:
        """The keys published since the last ``wait`` or ``take``, without waiting (often empty)."""
        if not self._event.is_set():
            return set()
        keys, self._keys = self._keys, set()
        self._event.clear()
        return keys or {""}

    async def wait(self, *, within: float) -> set[str]:
        """The keys published since the last call; empty after ``within`` s without any."""
        if not self._event.is_set():
            await wait_event(self._event, within=within)
        keys, self._keys = self._keys, set()
        self._event.clear()
        return keys


Sender = Callable[[list[tuple[Channel, str]]], Awaitable[None]]


class Wakeups:
    """The in-process fan-out (and, given a ``sender``, the way to every other process)."""

    def __init__(self) -> None:
        self._waiters: dict[Channel, set[Waiter]] = {channel: set() for channel in Channel}
        self.sender: Sender | None = None  # set by the PostgreSQL store: NOTIFY outside a write

    @contextlib.asynccontextmanager
    async def subscribe(self, channel: Channel, *, key: str | None = None) -> AsyncIterator[Waiter]:
        waiter = Waiter(channel=channel, key=key)
        self._waiters[channel].add(waiter)
        try:
            yield waiter
        finally:
            self._waiters[channel].discard(waiter)

    async def publish(self, channel: Channel, *, key: str = "") -> None:
        """Wake the waiters on ``channel`` here and in every other process."""
        check_key(key)
        if self.sender is not None:
            await self.sender([(channel, key)])  # comes back through the listener too
        self.deliver([(channel, key)])

    def deliver(self, notices: Iterable[tuple[Channel, str]]) -> None:
        """Wake the local waiters (the store calls it after a commit; the listener on NOTIFY)."""
        try:
            running: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        for channel, key in notices:
            for waiter in list(self._waiters[channel]):
                if waiter.key is not None and waiter.key != key:
                    continue
                if waiter.loop is running:
                    waiter._wake(key)
                elif not waiter.loop.is_closed():
                    waiter.loop.call_soon_threadsafe(waiter._wake, key)

    def wake_everyone(self) -> None:
        """After the listener lost its connection: notices may have been missed, so look again."""
        self.deliver((channel, waiter.key or "") for channel in Channel for waiter in list(self._waiters[channel]))


async def wait_event(event: asyncio.Event, *, within: float) -> bool:
    """Until ``event`` is set (True) or ``within`` seconds passed (False); a cancel always raises.

    Not ``asyncio.wait_for``: on Python 3.11 it returns normally when the task is cancelled in
    the loop turn where the event fired, and the cancel is lost, so a loop of waits (a
    dispatcher, a follower) never stops: ``serving.cancel(); await serving`` hung.
    ``asyncio.timeout`` tells its own expiry from a cancel and re-raises the cancel."""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(within):
            await event.wait()
    return event.is_set()


def check_key(key: str) -> None:
    if len(key.encode()) > MAX_KEY_BYTES:
        raise ValueError(f"a wake-up key is at most {MAX_KEY_BYTES} bytes (got {len(key.encode())}): "
                         "publish an id and let waiters read the data from the store")
