"""A server-ish process for the replica tests: ``python replica_process.py worker|scheduler``.

Settings come from ``KUBELINE_*`` variables, as for ``kubeline server``. ``worker`` resumes
orphaned runs and dispatches queued ones (``engine.serve``); ``scheduler`` ticks schedules.
SIGTERM stops it cleanly; the tests also ``kill -9`` it.
"""

from __future__ import annotations

import asyncio
import signal
import sys
from typing import Any

from kubeline import bootstrap, settings
from kubeline.scheduler import ticker


async def main(role: str) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    async with bootstrap.open_kubeline(settings.Settings(), replica=True) as kl:
        tasks: list[asyncio.Task[Any]] = []
        if role == "worker":
            tasks.append(asyncio.create_task(kl.engine.resume()))
            tasks.append(asyncio.create_task(kl.engine.serve()))
        else:
            tasks.append(asyncio.create_task(ticker.run_forever(kl)))
        print("ready", flush=True)
        await stop.wait()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await kl.engine.shutdown()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1]))
