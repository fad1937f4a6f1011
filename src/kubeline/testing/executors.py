"""An in-memory executor with scripted outcomes, for engine tests (no processes).

Script what each stage does with ``Outcome`` values, keyed by stage id (a list gives one outcome
per attempt, the last repeating)::

    fake = FakeExecutor({"fetch": Outcome(outputs={"rows": 3}, lines=("got 3 rows",)),
                         "load": [Outcome(exit_code=1), Outcome()],      # fails, then succeeds
                         "slow": Outcome(hang=True)})                     # until cancelled

Tests then assert on ``fake.started`` (every ``AttemptSpec`` in start order) and ``fake.running``.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from typing import Any

from kubeline.domain import errors, states
from kubeline.executors import base


@dataclasses.dataclass(frozen=True, kw_only=True)
class Outcome:
    outputs: dict[str, Any] = dataclasses.field(default_factory=dict)
    exit_code: int = 0
    route: str | None = None
    lines: tuple[str, ...] = ()  # written to stdout before the attempt ends
    duration: float = 0.0  # seconds before the attempt ends (a timeout applies when longer)
    hang: bool = False  # runs until cancelled (or its timeout)
    oom: bool = False
    start_error: str | None = None  # start() raises ExecutorError with this message
    error: str | None = None  # the failure's message (default: "exited with code N")


_DEFAULT = Outcome()


class FakeExecutor:
    name = "fake"
    capabilities = base.Capabilities(adopt=True, memory_limit=True, cpu_limit=True)

    def __init__(self, outcomes: dict[str, Outcome | list[Outcome]] | None = None) -> None:
        self.outcomes: dict[str, Outcome | list[Outcome]] = dict(outcomes or {})
        self.started: list[base.AttemptSpec] = []
        self.cancelled: list[str] = []
        self.adopted: list[str] = []
        self._tasks: dict[str, asyncio.Task[base.AttemptResult]] = {}
        self._cancel: dict[str, asyncio.Event] = {}
        self._specs: dict[str, base.AttemptSpec] = {}

    @property
    def running(self) -> list[str]:
        """Attempt ids whose attempts have not ended yet."""
        return [key for key, task in self._tasks.items() if not task.done()]

    def outcome_for(self, spec: base.AttemptSpec) -> Outcome:
        scripted = self.outcomes.get(spec.stage_id, _DEFAULT)
        if isinstance(scripted, list):
            return scripted[min(spec.number, len(scripted)) - 1] if scripted else _DEFAULT
        return scripted

    async def start(self, spec: base.AttemptSpec, sink: base.LogSink) -> dict[str, Any]:
        outcome = self.outcome_for(spec)
        if outcome.start_error is not None:
            raise errors.ExecutorError(outcome.start_error)
        self.started.append(spec)
        self._specs[spec.attempt_id] = spec
        self._launch(spec.attempt_id, outcome, sink, timeout=spec.timeout)
        return {"attempt_id": spec.attempt_id, "stage_id": spec.stage_id, "number": spec.number}

    async def wait(self, handle: dict[str, Any]) -> base.AttemptResult:
        task = self._tasks.get(handle["attempt_id"])
        if task is None:
            raise errors.ExecutorError(f"attempt {handle['attempt_id']} was not started here")
        return await asyncio.shield(task)

    async def cancel(self, handle: dict[str, Any]) -> None:
        self.cancelled.append(handle["attempt_id"])
        event = self._cancel.get(handle["attempt_id"])
        if event is not None:
            event.set()

    async def adopt(self, handle: dict[str, Any], sink: base.LogSink) -> bool:
        """Adopts attempts this fake knows (started and not yet ended), like a live process."""
        self.adopted.append(handle["attempt_id"])
        task = self._tasks.get(handle["attempt_id"])
        return task is not None and not task.done()

    async def close(self) -> None:
        for task in self._tasks.values():
            task.cancel()
        for task in self._tasks.values():
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def _launch(self, attempt_id: str, outcome: Outcome, sink: base.LogSink, *,
                timeout: float | None) -> None:
        cancel = self._cancel[attempt_id] = asyncio.Event()
        self._tasks[attempt_id] = asyncio.get_running_loop().create_task(
            _play(outcome, sink, cancel=cancel, deadline=timeout))


async def _play(outcome: Outcome, sink: base.LogSink, *, cancel: asyncio.Event,
                deadline: float | None) -> base.AttemptResult:
    for line in outcome.lines:
        sink.write("stdout", line)
    duration = None if outcome.hang else outcome.duration
    limit = min(x for x in (duration, deadline) if x is not None) \
        if duration is not None or deadline is not None else None
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(cancel.wait(), limit)
    result = _result(outcome, cancelled=cancel.is_set(),
                     timed_out=not cancel.is_set() and deadline is not None
                     and (duration is None or duration > deadline))
    if result.failure is not None:
        sink.write("system", f"attempt {result.failure.value}: {result.error}")
    sink.close()
    return result


def _result(outcome: Outcome, *, cancelled: bool, timed_out: bool) -> base.AttemptResult:
    if cancelled:
        return base.AttemptResult(exit_code=None, failure=states.FailureKind.CANCELLED,
                                  error="was cancelled")
    if timed_out:
        return base.AttemptResult(exit_code=None, failure=states.FailureKind.TIMEOUT,
                                  error="timed out")
    if outcome.oom:
        return base.AttemptResult(exit_code=137, failure=states.FailureKind.OOM,
                                  error="exceeded its memory limit")
    if outcome.exit_code != 0:
        return base.AttemptResult(exit_code=outcome.exit_code,
                                  failure=states.FailureKind.EXIT_CODE,
                                  error=outcome.error or f"exited with code {outcome.exit_code}")
    return base.AttemptResult(exit_code=0, outputs=dict(outcome.outputs), route=outcome.route)
