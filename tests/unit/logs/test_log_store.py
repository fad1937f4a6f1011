"""The file log store: format, masking, merged reads, followers and cursors."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import subprocess
import sys
import textwrap

import pytest

from kubeline.logs import LogStore, lines


@pytest.fixture
def store(tmp_path):
    return LogStore(tmp_path / "logs")


def test_line_format_is_grep_friendly(store, tmp_path):
    sink = store.sink(run_id="r1", stage_id="fetch", attempt=1)
    sink.write("stdout", "hello world", at=1_700_000_000.123456)
    sink.close()
    raw = (tmp_path / "logs" / "r1" / "fetch" / "1.log").read_text()
    assert raw == "2023-11-14T22:13:20.123456Z stdout hello world\n"
    assert re.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z (stdout|stderr|system) ", raw)


def test_secrets_are_masked_before_writing(store, tmp_path):
    sink = store.sink(run_id="r1", stage_id="s", attempt=1,
                      secrets=["hunter2", "ab", "multi\nline-secret"])
    sink.write("stdout", "password=hunter2; again hunter2 and ab and line-secret")
    sink.close()
    raw = (tmp_path / "logs" / "r1" / "s" / "1.log").read_text()
    assert "hunter2" not in raw and "line-secret" not in raw
    assert "password=***; again *** and ab and ***" in raw  # 'ab' is too short to mask


def test_text_with_newlines_becomes_several_lines_and_bad_unicode_is_kept(store):
    sink = store.sink(run_id="r1", stage_id="s", attempt=1)
    sink.write("stderr", "one\ntwo")
    sink.write("stdout", "lone surrogate \udcff ok")
    sink.close()
    got = list(store.read("r1"))
    assert [(line.stream, line.text) for line in got[:2]] == [("stderr", "one"), ("stderr", "two")]
    assert got[2].text.startswith("lone surrogate") and got[2].text.endswith("ok")


def test_read_merges_stages_in_time_order_and_filters(store):
    a = store.sink(run_id="r", stage_id="a", attempt=1)
    b = store.sink(run_id="r", stage_id="b", attempt=1)
    b2 = store.sink(run_id="r", stage_id="b", attempt=2)
    a.write("stdout", "a1", at=10.0)
    b.write("stdout", "b1", at=11.0)
    a.write("stdout", "a2", at=12.0)
    b2.write("stdout", "b2-1", at=13.0)
    for sink in (a, b, b2):
        sink.close()
    assert [line.text for line in store.read("r")] == ["a1", "b1", "a2", "b2-1"]
    assert [line.text for line in store.read("r", stage_id="b")] == ["b1", "b2-1"]
    assert [line.text for line in store.read("r", stage_id="b", attempt=2)] == ["b2-1"]
    assert [(line.stage_id, line.attempt) for line in store.read("r", stage_id="a")] == [
        ("a", 1), ("a", 1)]
    assert list(store.read("missing-run")) == []


def test_cursor_round_trip_and_bad_cursor():
    assert lines.parse_cursor("my/stage/2/120") == ("my/stage", 2, 120)
    with pytest.raises(ValueError, match="stage/attempt/offset"):
        lines.parse_cursor("nonsense")


async def test_follow_yields_existing_then_new_lines_to_every_follower(store):
    sink = store.sink(run_id="r", stage_id="s", attempt=1)
    sink.write("stdout", "before")
    done = asyncio.Event()

    async def collect():
        return [line.text async for batch in store.follow("r", until=done) for line in batch]

    followers = [asyncio.create_task(collect()) for _ in range(3)]
    await asyncio.sleep(0.05)
    for i in range(5):
        sink.write("stdout", f"line {i}")
        await asyncio.sleep(0.01)
    other = store.sink(run_id="r", stage_id="t", attempt=1)
    other.write("stderr", "from t")
    await asyncio.sleep(0.05)
    sink.close()
    other.close()
    done.set()
    results = await asyncio.gather(*followers)
    expected = ["before", *[f"line {i}" for i in range(5)], "from t"]
    for result in results:
        assert result == expected


async def test_follow_is_woken_promptly_in_process(store):
    sink = store.sink(run_id="r", stage_id="s", attempt=1)
    follower = store.follow("r")
    first = asyncio.ensure_future(anext(follower))
    await asyncio.sleep(0.02)
    loop = asyncio.get_running_loop()
    started = loop.time()
    sink.write("stdout", "ping")
    batch = await asyncio.wait_for(first, 1)
    assert [line.text for line in batch] == ["ping"]
    assert loop.time() - started < 0.5
    await follower.aclose()
    sink.close()


async def test_follow_resumes_after_a_cursor(store):
    sink = store.sink(run_id="r", stage_id="s", attempt=1)
    for i in range(4):
        sink.write("stdout", f"l{i}", at=100.0 + i)
    sink.close()
    other = store.sink(run_id="r", stage_id="t", attempt=1)
    other.write("stdout", "t-old", at=100.5)
    other.write("stdout", "t-new", at=102.5)
    other.close()

    async def is_final():
        return True

    seen = [line async for batch in store.follow("r", until=is_final) for line in batch]
    assert [line.text for line in seen] == ["l0", "t-old", "l1", "l2", "t-new", "l3"]
    resumed = [line.text async for batch in store.follow("r", after=seen[2].cursor, until=is_final)
               for line in batch]
    assert resumed == ["l2", "t-new", "l3"]


async def test_follow_sees_lines_written_by_another_process(store, tmp_path):
    done = asyncio.Event()

    async def collect():
        return [line.text async for batch in store.follow("r", stage_id="s", until=done) for line in batch]

    follower = asyncio.create_task(collect())
    script = textwrap.dedent(f"""
        import time
        from kubeline.logs import LogStore
        sink = LogStore({str(tmp_path / "logs")!r}).sink(run_id="r", stage_id="s", attempt=1)
        for i in range(3):
            sink.write("stdout", f"remote {{i}}")
            sink.flush()
            time.sleep(0.05)
        sink.close()
    """)
    proc = await asyncio.create_subprocess_exec(sys.executable, "-c", script,
                                                stdout=subprocess.DEVNULL)
    assert await proc.wait() == 0
    await asyncio.sleep(0.3)
    done.set()
    assert await follower == ["remote 0", "remote 1", "remote 2"]


def test_a_closed_sink_ignores_late_lines(store):
    sink = store.sink(run_id="r", stage_id="s", attempt=1)
    sink.close()
    sink.write("stdout", "late")
    sink.close()
    assert list(store.read("r")) == []


def _open_fds(path) -> int:
    count = 0
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):
            count += os.readlink(f"/proc/self/fd/{fd}") == str(path)
    return count


async def test_on_a_loop_the_file_is_opened_on_a_thread_and_lines_keep_their_order(store, tmp_path):
    path = tmp_path / "logs" / "r" / "s" / "1.log"
    woken = asyncio.Event()
    store._wakeups["r"] = {woken}
    sink = store.sink(run_id="r", stage_id="s", attempt=1)
    sink.write("system", "starting", at=1.0)
    assert sink._file is None and sink._waiting  # the thread makes the file, the line waits
    sink.write("stdout", "early", at=2.0)
    await asyncio.wait_for(woken.wait(), 5)  # written and flushed once the file is there
    sink.write("stdout", "late", at=3.0)
    sink.close()
    assert [line.text for line in store.read("r")] == ["starting", "early", "late"]
    assert _open_fds(path) == 0


async def test_close_before_the_thread_opened_the_file_still_stores_every_line(store, tmp_path):
    path = tmp_path / "logs" / "r" / "s" / "1.log"
    sinks = []
    for attempt in range(1, 21):
        sink = store.sink(run_id="r", stage_id="s", attempt=attempt)
        sink.write("stdout", f"line of {attempt}")
        sink.close()  # at once: the thread has not opened the file yet (or just has)
        sinks.append(sink)
        assert [line.text for line in store.read("r", attempt=attempt)] == [f"line of {attempt}"]
    for _ in range(100):  # the thread's own file, when it came too late, is closed by the thread
        if sum(_open_fds(path.with_name(f"{a}.log")) for a in range(1, 21)) == 0:
            break
        await asyncio.sleep(0.01)
    assert sum(_open_fds(path.with_name(f"{a}.log")) for a in range(1, 21)) == 0
    assert [line.text for line in store.read("r", attempt=1)] == ["line of 1"]  # written once


async def test_a_flood_of_lines_while_the_file_opens_is_written_without_waiting(store, tmp_path):
    sink = store.sink(run_id="r", stage_id="s", attempt=1)
    for i in range(3000):  # no await: the thread's hand-over cannot come in between
        sink.write("stdout", f"l{i}")
    assert sink._file is not None and len(sink._waiting) == 0  # taken over past the bound
    sink.close()
    assert [line.text for line in store.read("r")] == [f"l{i}" for i in range(3000)]
