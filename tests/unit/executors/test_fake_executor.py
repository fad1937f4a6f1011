"""The scripted fake executor used by engine tests."""

from __future__ import annotations

import asyncio

import pytest

from kubeline.domain import errors, states
from kubeline.executors import base
from kubeline.testing import executors as fake


class ListSink:
    def __init__(self):
        self.lines = []
        self.closed = False

    def write(self, stream, text, *, at=None):
        self.lines.append((stream, text))

    def close(self):
        self.closed = True


def spec(stage_id: str, number: int = 1, timeout: float | None = None) -> base.AttemptSpec:
    return base.AttemptSpec(attempt_id=f"{stage_id}-{number}", run_id="r", pipeline="p",
                            stage_id=stage_id, number=number, stage_type="python", folder=None,
                            argv=("python", "main.py"), runtime=base.Runtime.PIPELINE,
                            python_version="3.11", requirements=None, timeout=timeout)


async def test_scripted_outcomes_per_stage_and_attempt():
    executor = fake.FakeExecutor({
        "ok": fake.Outcome(outputs={"n": 1}, lines=("hi",), route="big"),
        "flaky": [fake.Outcome(exit_code=3), fake.Outcome()],
        "oom": fake.Outcome(oom=True),
    })
    sink = ListSink()
    result = await executor.wait(await executor.start(spec("ok"), sink))
    assert result.succeeded and result.outputs == {"n": 1} and result.route == "big"
    assert sink.lines == [("stdout", "hi")] and sink.closed

    first = await executor.wait(await executor.start(spec("flaky", 1), ListSink()))
    second = await executor.wait(await executor.start(spec("flaky", 2), ListSink()))
    third = await executor.wait(await executor.start(spec("flaky", 3), ListSink()))
    assert (first.failure, first.error) == (states.FailureKind.EXIT_CODE, "exited with code 3")
    assert second.succeeded and third.succeeded
    assert (await executor.wait(await executor.start(spec("oom"), ListSink()))).failure \
        is states.FailureKind.OOM
    assert (await executor.wait(await executor.start(spec("unscripted"), ListSink()))).succeeded
    assert [s.attempt_id for s in executor.started] == [
        "ok-1", "flaky-1", "flaky-2", "flaky-3", "oom-1", "unscripted-1"]


async def test_hang_until_cancelled_and_timeout():
    executor = fake.FakeExecutor({"slow": fake.Outcome(hang=True)})
    handle = await executor.start(spec("slow"), ListSink())
    await asyncio.sleep(0.01)
    assert executor.running == ["slow-1"]
    assert await executor.adopt(handle, ListSink())
    await executor.cancel(handle)
    result = await executor.wait(handle)
    assert result.failure is states.FailureKind.CANCELLED and executor.cancelled == ["slow-1"]
    assert not await executor.adopt(handle, ListSink())

    timed = await executor.wait(await executor.start(spec("slow", 2, timeout=0.01), ListSink()))
    assert timed.failure is states.FailureKind.TIMEOUT


async def test_start_error_and_unknown_handle():
    executor = fake.FakeExecutor({"bad": fake.Outcome(start_error="no such image")})
    with pytest.raises(errors.ExecutorError, match="no such image"):
        await executor.start(spec("bad"), ListSink())
    with pytest.raises(errors.ExecutorError):
        await executor.wait({"attempt_id": "nope"})
    await executor.start(spec("x"), ListSink())
    await executor.close()
