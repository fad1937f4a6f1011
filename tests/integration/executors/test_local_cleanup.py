"""Cleanup after a local attempt: it runs just after the result (on the cleanup thread, off the
event loop), but it always runs."""

from __future__ import annotations

import asyncio
import os
import pathlib
import subprocess
import sys
import textwrap
import time
import uuid

from kubeline.executors import local, local_limits

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


def left_in(work: pathlib.Path) -> list[pathlib.Path]:
    """What is left in a work dir (a closed executor removes it when empty)."""
    return list(work.iterdir()) if work.exists() else []


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


async def test_a_setsid_daemon_dies_right_after_the_release(harness):
    spec = harness.spec(DAEMON)
    handle = await harness.executor.start(spec, harness.sink(spec))
    result = await harness.executor.wait(handle)
    assert result.succeeded, result.error
    assert os.path.exists(os.path.join(handle["work_dir"], "rc"))  # kept until the result is stored
    daemons = marked(spec.attempt_id)
    await harness.executor.release(handle)
    assert not os.path.exists(handle["work_dir"])  # moved away (by the cleanup thread) already
    await asyncio.wait_for(harness.executor.janitor.settle(), 1.0)  # the rest, asked for by the release
    assert await gone(daemons, within=1.0)
    assert marked(spec.attempt_id) == []
    assert not left_in(harness.tmp_path / "work")  # work dir deleted, nothing left


async def test_a_result_nobody_stored_stays_for_the_next_server_until_released(harness):
    """A server killed after the attempt ended but before its result was stored: the status and
    outputs stay for the next one; ``leftovers`` names it once nobody follows it."""
    spec = harness.spec(DAEMON + "open(os.environ['KUBELINE_OUTPUTS'], 'w').write('{\"n\": 1}')\n")
    handle = await harness.executor.start(spec, harness.sink(spec))
    assert await gone([handle["pid"]], within=5.0)
    await asyncio.sleep(0.3)
    assert harness.executor.leftovers() == []  # still followed here
    daemons = marked(spec.attempt_id)
    await harness.executor.close()  # what it left running dies, its files stay
    assert await gone(daemons, within=1.0)
    assert os.path.exists(os.path.join(handle["work_dir"], "rc"))

    successor = local.LocalExecutor(work_dir=harness.tmp_path / "work", artifacts_dir=harness.tmp_path / "art",
                                    venvs=harness.executor.venvs)
    try:
        [left] = successor.leftovers()
        # the intent + the pid its supervisor wrote = the handle (an ended process: no start time)
        assert {**left, "proc_start": handle["proc_start"]} == handle and left["proc_start"] == -1
        assert await successor.adopt(left, harness.sink(spec))
        result = await successor.wait(left)
        assert result.succeeded and result.outputs == {"n": 1}
        assert successor.leftovers() == []  # collected here: released by the engine, not swept
        await successor.release(left)
        await successor.janitor.settle()
        assert not os.path.exists(handle["work_dir"])
        await successor.release(left)  # idempotent
    finally:
        await successor.close()
    assert not left_in(harness.tmp_path / "work")


async def test_release_of_an_attempt_followed_elsewhere_cleans_up_from_the_handle(harness):
    spec = harness.spec(DAEMON)
    handle = await harness.executor.start(spec, harness.sink(spec))
    assert await gone([handle["pid"]], within=5.0)
    daemons = marked(spec.attempt_id)
    assert daemons
    other = local.LocalExecutor(work_dir=harness.tmp_path / "work", artifacts_dir=harness.tmp_path / "art",
                                venvs=harness.executor.venvs)
    await other.release(handle)
    assert await gone(daemons, within=1.0)
    assert not left_in(harness.tmp_path / "work")
    await other.close()


async def test_find_an_attempt_whose_handle_was_never_stored(harness):
    """A server killed between ``start`` and storing the handle: the next one finds the attempt
    by its id (running or ended) instead of starting the stage again."""
    spec = harness.spec("import time; time.sleep(0.5); print('done')")
    handle = await harness.executor.start(spec, harness.sink(spec))
    await asyncio.sleep(0.1)
    await harness.executor.close()
    other = local.LocalExecutor(work_dir=harness.tmp_path / "work", artifacts_dir=harness.tmp_path / "art",
                                venvs=harness.executor.venvs)
    try:
        assert await other.find(spec.attempt_id) == handle  # running
        assert await gone([handle["pid"]], within=5.0)
        found = await other.find(spec.attempt_id)
        assert found is not None and found["pid"] == handle["pid"]  # ended: its rc tells how
        assert found["proc_start"] in (handle["proc_start"], -1)
        assert await other.adopt(found, harness.sink(spec))
        assert (await other.wait(found)).succeeded
        assert await other.find("never-started") is None
        os.makedirs(harness.tmp_path / "work" / "no-intent")  # a start that died before the spawn
        assert await other.find("no-intent") is None
        assert [h["attempt_id"] for h in other.leftovers()] == ["no-intent"]
    finally:
        await other.close()


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


def test_kill_all_marked_finds_the_strays_of_several_attempts_in_one_scan():
    ids = [f"many-{uuid.uuid4().hex}" for _ in range(2)]
    sleep = [sys.executable, "-c", "import time; time.sleep(60)"]
    with open("/proc/sys/kernel/ns_last_pid") as file:
        first = int(file.read()) + 1
    with settled(subprocess.Popen(sleep, env={**os.environ, "KUBELINE_ATTEMPT_ID": ids[0]})) as one, \
            settled(subprocess.Popen(sleep, env={**os.environ, "KUBELINE_ATTEMPT_ID": ids[1]})) as two, \
            settled(subprocess.Popen(sleep, env={**os.environ, "KUBELINE_ATTEMPT_ID": f"{ids[0]}-other"})) as other:
        # the later attempt's first pid comes first in the mapping: the scan starts at the earliest
        assert local_limits.kill_all_marked({ids[1]: two.pid, ids[0]: first}) == 2
        assert (one.wait(5), two.wait(5)) == (-9, -9)
        assert other.poll() is None  # a marker that only starts like theirs is not theirs
        other.kill()


async def test_the_strays_of_attempts_released_together_are_found_by_one_scan(harness):
    specs_ = [harness.spec(DAEMON) for _ in range(3)]
    handles = [await harness.executor.start(spec, harness.sink(spec)) for spec in specs_]
    for handle in handles:
        assert (await harness.executor.wait(handle)).succeeded
    daemons = [pid for spec in specs_ for pid in marked(spec.attempt_id)]
    assert len(daemons) >= 3  # a daemon each (and maybe a sampler shell still on its way out)
    for handle in handles:
        await harness.executor.release(handle)
    await asyncio.wait_for(harness.executor.janitor.settle(), 2.0)
    assert await gone(daemons, within=1.0)
