"""Cleanup after a local attempt: it runs just after the result, but it always runs."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import textwrap
import time
import uuid

from kubeline.executors import local_limits, local_run

DAEMON = textwrap.dedent("""
    import os, sys, time
    pid = os.fork()
    if pid == 0:
        os.setsid()  # leaves the process group: only the environ marker finds it
        if os.fork():
            os._exit(0)
        time.sleep(1000)
        os._exit(0)
    os.waitpid(pid, 0)
    print("started", flush=True)
""")


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as file:
            return file.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def marked(attempt_id: str) -> list[int]:
    marker = f"\0KUBELINE_ATTEMPT_ID={attempt_id}\0".encode()
    found = []
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                with open(f"/proc/{entry.name}/environ", "rb") as file:
                    if marker in b"\0" + file.read() + b"\0":
                        found.append(int(entry.name))
            except OSError:
                pass
    return found


def settled(process: subprocess.Popen[bytes]) -> subprocess.Popen[bytes]:
    """Wait until the kernel has set up the new environ (Popen returns a bit before that)."""
    for _ in range(500):
        with open(f"/proc/{process.pid}/environ", "rb") as file:
            if file.read():
                break
        time.sleep(0.01)
    return process


async def gone(pids: list[int], *, within: float) -> bool:
    deadline = time.monotonic() + within
    while any(alive(pid) for pid in pids) and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
    return not any(alive(pid) for pid in pids)


async def test_a_setsid_daemon_dies_right_after_the_result(harness):
    spec = harness.spec(DAEMON)
    handle = await harness.executor.start(spec, harness.sink(spec))
    result = await harness.executor.wait(handle)
    assert result.succeeded, result.error
    assert not os.path.exists(handle["work_dir"])  # moved away before the result
    await asyncio.sleep(0)  # the cleanup is the next thing the loop runs
    assert await gone(marked(spec.attempt_id), within=1.0)
    assert marked(spec.attempt_id) == []
    assert not list((harness.tmp_path / "work").iterdir())  # work dir deleted, nothing left


async def test_cleanup_happens_even_when_nobody_collects_the_result(harness):
    spec = harness.spec(DAEMON)
    handle = await harness.executor.start(spec, harness.sink(spec))
    for _ in range(200):
        if os.path.exists(os.path.join(os.path.dirname(handle["work_dir"]),
                                       local_run.TRASH_PREFIX + os.path.basename(handle["work_dir"]))):
            break
        await asyncio.sleep(0.01)
    assert await gone([handle["pid"]], within=5.0)
    await asyncio.sleep(local_run._CLEANUP_FALLBACK + 0.2)
    assert marked(spec.attempt_id) == []
    assert not list((harness.tmp_path / "work").iterdir())


async def test_close_cleans_finished_attempts_at_once(harness):
    spec = harness.spec(DAEMON)
    handle = await harness.executor.start(spec, harness.sink(spec))
    result = await harness.executor.wait(handle)
    assert result.succeeded
    daemons = marked(spec.attempt_id)
    await harness.executor.close()  # before the loop had a turn to clean up
    assert await gone(daemons, within=1.0)
    assert not list((harness.tmp_path / "work").iterdir())


def test_kill_marked_scans_only_pids_since_the_attempt_started():
    marker = f"scan-{uuid.uuid4().hex}"  # other test sessions may run on this machine
    env = {**os.environ, "KUBELINE_ATTEMPT_ID": marker}
    sleep = [sys.executable, "-c", "import time; time.sleep(60)"]
    with settled(subprocess.Popen(sleep, env=env)) as before:
        with open("/proc/sys/kernel/ns_last_pid") as file:
            first = int(file.read()) + 1
        with settled(subprocess.Popen(sleep, env=env)) as after:
            assert local_limits.kill_marked(marker, first_pid=first) == 1
            assert after.wait(5) == -9
            assert before.poll() is None  # older than the attempt: not looked at
            assert local_limits.kill_marked(marker) == 1  # the full scan finds it
            assert before.wait(5) == -9


def test_kill_marked_handles_wrapped_pids():
    marker = f"wrap-{uuid.uuid4().hex}"
    env = {**os.environ, "KUBELINE_ATTEMPT_ID": marker}
    sleep = [sys.executable, "-c", "import time; time.sleep(60)"]
    with settled(subprocess.Popen(sleep, env=env)) as process:
        with open("/proc/sys/kernel/ns_last_pid") as file:
            last = int(file.read())
        # a "first pid" above the last one handed out: the counter wrapped since the attempt began
        assert local_limits.kill_marked(marker, first_pid=last + 1) == 1
        assert process.wait(5) == -9
