"""One ``LISTEN`` connection per process (PostgreSQL): notifications become local wake-ups.

The listener holds a dedicated autocommit psycopg connection outside the pool, listens on every
``wakeups.Channel`` and hands each notification to ``Wakeups.deliver``. When the connection
drops (the database restarted), it wakes every waiter (a notice may have been lost; waiters
re-read the store) and reconnects with a backoff, forever: the server recovers without a restart.
``send`` publishes outside a store write (``NOTIFY`` through the pool).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

import psycopg
import psycopg.sql

from kubeline.storage import wakeups
from kubeline.storage.sql import engines

log = logging.getLogger(__name__)
BACKOFF = (0.2, 0.5, 1.0, 2.0, 5.0)


class Listener:
    def __init__(self, *, database: engines.AsyncDatabase) -> None:
        self.database = database
        self.wakeups = database.wakeups
        self.conninfo = database.url.set(drivername="postgresql").render_as_string(hide_password=False)
        self.connected = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def start(self, *, within: float = 10.0) -> None:
        """Start listening; wait (up to ``within`` s) until the first LISTEN is in place."""
        self.wakeups.sender = self.send
        self._task = asyncio.create_task(self._listen_forever(), name="kubeline LISTEN")
        await wakeups.wait_event(self.connected, within=within)

    async def stop(self) -> None:
        self.wakeups.sender = None
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    async def send(self, notices: list[tuple[wakeups.Channel, str]]) -> None:
        await self.database.run(lambda conn: conn.execute(engines.pg_notify(notices)), write=True)

    async def _listen_forever(self) -> None:
        failures = 0
        while True:
            try:
                async with await psycopg.AsyncConnection.connect(self.conninfo, autocommit=True) as conn:
                    for channel in wakeups.Channel:
                        await conn.execute(psycopg.sql.SQL("LISTEN {}").format(psycopg.sql.Identifier(channel.value)))
                    if failures:
                        log.info("wake-ups: listening again after %d failed attempts", failures)
                        self.wakeups.wake_everyone()  # what was sent while away is lost: look again
                    failures = 0
                    self.connected.set()
                    async for notice in conn.notifies():
                        with contextlib.suppress(ValueError):
                            self.wakeups.deliver([(wakeups.Channel(notice.channel), notice.payload)])
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the database went away: poll as a fallback, reconnect
                self.connected.clear()
                self.wakeups.wake_everyone()
                delay = BACKOFF[min(failures, len(BACKOFF) - 1)]
                failures += 1
                log.warning("wake-ups: the LISTEN connection failed (%s); reconnecting in %.1fs", exc, delay)
                await asyncio.sleep(delay)
