"""The cleanup thread: jobs run off the event loop, in order, handed over in batches."""

from __future__ import annotations

import asyncio
import threading

from kubeline.executors import local_janitor


async def test_jobs_run_on_the_cleanup_thread_in_order_and_together() -> None:
    janitor = local_janitor.Janitor()
    ran: list[tuple[int, str]] = []
    try:
        for n in range(5):
            janitor.submit(lambda n=n: ran.append((n, threading.current_thread().name)))
        assert ran == []  # gathered: nothing is handed over before GATHER passed
        await asyncio.sleep(local_janitor.GATHER * 3)
        await janitor.settle()
        assert [n for n, _ in ran] == [0, 1, 2, 3, 4]
        assert {name for _, name in ran} == {next(iter({name for _, name in ran}))}  # one thread
        assert ran[0][1].startswith("kubeline-cleanup")
    finally:
        janitor.close()


async def test_settle_hands_over_at_once_and_a_failing_job_stops_no_other(caplog) -> None:
    janitor = local_janitor.Janitor()
    ran: list[int] = []

    def fail() -> None:
        raise OSError("disk gone")

    try:
        janitor.submit(lambda: ran.append(1))
        janitor.submit(fail)
        janitor.submit(lambda: ran.append(3))
        await asyncio.wait_for(janitor.settle(), local_janitor.GATHER / 2 + 1.0)
        assert ran == [1, 3]
        assert "cleanup after an attempt failed" in caplog.text
    finally:
        janitor.close()


def test_without_a_loop_a_job_is_handed_over_at_once() -> None:
    janitor = local_janitor.Janitor()
    done = threading.Event()
    janitor.submit(done.set)
    assert done.wait(5)
    janitor.close()
