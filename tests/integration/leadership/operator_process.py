"""One ``run_operator`` (real kopf) in a process of its own, for test_operator_process: signals
reach only a process's main thread, and kopf installs handlers of its own there.

``python operator_process.py signal``: a startup handler sends the process SIGTERM while kopf
starts (its handlers installed, ours not yet back); prints ``stopped`` once ``run_operator`` returned.
``python operator_process.py lease``: leader through a Lease (in memory, real clock); once kopf
runs, another holder takes the Lease; prints ``stepped down <s>`` when kopf was stopped and this
process no longer counts as leader, then ``leader again`` once the other's Lease expired and
kopf started again.

$KUBECONFIG names an API server nobody listens on: kopf's watchers retry in the background and
no handler ever gets an event (the memo's context is never read).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import signal
import sys
import time
from collections.abc import Callable

import kopf

from kubeline import metrics
from kubeline.operator import handlers, leader, runner
from kubeline.testing.leases import MemoryLeases


def sample(name: str) -> float | None:
    """A metric's value as /metrics would show it."""
    return metrics.METRICS.registry.get_sample_value(name)


async def until(check: Callable[[], bool], what: str, limit: float) -> float:
    start = time.monotonic()
    while not check():
        if time.monotonic() - start > limit:
            print(f"TIMEOUT waiting for {what}", flush=True)
            sys.exit(3)
        await asyncio.sleep(0.05)
    return time.monotonic() - start


async def signal_while_starting() -> None:
    @kopf.on.startup(registry=handlers.REGISTRY)
    async def terminate(**_: object) -> None:
        await asyncio.sleep(0.3)  # kopf's own SIGTERM handler is in place by now
        os.kill(os.getpid(), signal.SIGTERM)

    stop = asyncio.Event()
    install = runner._signal_installer(stop)
    install()
    await asyncio.wait_for(runner.run_operator(None, namespaces=["nowhere"], election=None,  # type: ignore[arg-type]
                                               stop=stop, on_signals=install), timeout=60)
    print("stopped", flush=True)


async def lose_the_lease() -> None:
    leases = MemoryLeases()
    election = leader.LeaderElection(leases=leases, identity="me", lease_seconds=3, renew_deadline=2,
                                     retry_seconds=0.5)
    stop = asyncio.Event()
    task = asyncio.create_task(runner.run_operator(None, namespaces=["nowhere"], election=election,  # type: ignore[arg-type]
                                                   stop=stop))
    await until(lambda: sample("kubeline_operator_leader") == 1, "leadership", 30)
    await asyncio.sleep(2)  # kopf up (ready or retrying its watchers)
    assert leases.record is not None
    await leases.replace(dataclasses.replace(leases.record, holder="another-replica"))
    took = await until(lambda: sample("kubeline_operator_leader") == 0 and not election.is_leader(), "stepping down", 20)
    print(f"stepped down {took:.1f}", flush=True)
    await until(lambda: sample("kubeline_operator_starts_total") == 2 and sample("kubeline_operator_leader") == 1, "leading again", 30)
    print("leader again", flush=True)
    stop.set()
    await asyncio.wait_for(task, timeout=60)


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(relativeCreated)6d %(name)s %(message)s")
    asyncio.run({"signal": signal_while_starting, "lease": lose_the_lease}[sys.argv[1]]())
