"""The Executor port: start an attempt, wait for it, cancel it, adopt it after a restart.

The engine hands an executor an ``AttemptSpec`` (everything resolved: argv, env, inputs, limits)
and a ``LogSink``; the executor streams every line of output into the sink as it happens and
enforces the timeout and memory limit itself, reporting *why* an attempt ended in the
``AttemptResult``. ``handle`` data is JSON, stored with the attempt, so a restarted server can
``adopt`` what is still running.
"""

from __future__ import annotations

import dataclasses
import enum
import pathlib
from collections.abc import Callable
from typing import Any, Protocol, cast

from kubeline.domain import specs, states
from kubeline.runtime import results


class Runtime(enum.StrEnum):
    PIPELINE = "pipeline"  # the pipeline's own virtualenv (python_version + requirements)
    KUBELINE = "kubeline"  # an interpreter with kubeline installed (built-in components)


@dataclasses.dataclass(frozen=True, kw_only=True)
class AttemptSpec:
    attempt_id: str
    run_id: str
    pipeline: str
    stage_id: str
    number: int
    stage_type: str
    folder: pathlib.Path | None  # the pipeline folder (code), None for folderless pipelines
    argv: tuple[str, ...]  # argv[0] == "python" means the runtime's interpreter
    runtime: Runtime
    python_version: str
    requirements: pathlib.Path | None  # resolved requirements file, if any
    extra_packages: tuple[str, ...] = ()  # e.g. papermill + ipykernel for notebooks
    env: dict[str, str] = dataclasses.field(default_factory=dict)  # plain + decrypted secrets
    secret_env: frozenset[str] = frozenset()  # keys of ``env`` whose values are secret
    env_from: dict[str, specs.EnvFrom] = dataclasses.field(default_factory=dict)  # K8s valueFrom
    inputs: dict[str, Any] = dataclasses.field(default_factory=dict)
    config: dict[str, Any] = dataclasses.field(default_factory=dict)  # rendered stage config
    timeout: float | None = None
    resources: specs.Resources = dataclasses.field(default_factory=specs.Resources)
    kubernetes: specs.KubernetesSpec = dataclasses.field(default_factory=specs.KubernetesSpec)
    tags: tuple[str, ...] = ()  # the pipeline's (worker pools serve pipelines by name or tag)


@dataclasses.dataclass(frozen=True, kw_only=True)
class AttemptResult:
    exit_code: int | None
    failure: states.FailureKind | None = None  # None = succeeded
    error: str = ""  # a sentence a user understands: "exceeded its memory limit of 64Mi"
    outputs: dict[str, Any] = dataclasses.field(default_factory=dict)
    route: str | None = None
    # When the attempt ended (epoch seconds), as the executor knows it: an attempt that ended while
    # no server ran (adopted later) keeps its real end time instead of the adoption's. None: now.
    ended_at: float | None = None

    @property
    def succeeded(self) -> bool:
        return self.failure is None


@dataclasses.dataclass(frozen=True, kw_only=True)
class Capabilities:
    adopt: bool = False  # can re-attach to attempts after a restart
    resource_metrics: bool = False
    memory_limit: bool = False
    cpu_limit: bool = False
    # keeps what an attempt leaves (its exit status, outputs) until ``release``d, and finds an
    # attempt by id that was started but whose handle never reached the store: ``Recoverable``
    recoverable: bool = False


class LogSink(Protocol):
    """Where an executor writes an attempt's output (masking and persistence happen behind it)."""

    def write(self, stream: str, text: str, *, at: float | None = None) -> None:
        """One line (no trailing newline) from ``stream`` ('stdout'/'stderr'/'system')."""
        ...

    def close(self) -> None: ...


async def stored_tail(sink: LogSink, *, max_bytes: int) -> bytes:
    """The last stored bytes of the sink's attempt log (``lines.format_line`` format), or b"" for
    a sink that keeps nothing readable (a test double): where an adopting executor resumes."""
    read = getattr(sink, "stored_tail", None)
    if read is None:
        return b""
    tail: bytes = await read(max_bytes=max_bytes)
    return tail


class Executor(Protocol):
    name: str
    capabilities: Capabilities

    async def start(self, spec: AttemptSpec, sink: LogSink) -> dict[str, Any]:
        """Start the attempt; return handle data (JSON) identifying it. Raise ExecutorError if it
        cannot start (the message says why)."""
        ...

    async def wait(self, handle: dict[str, Any]) -> AttemptResult:
        """Wait until the attempt ends (timeout/limits enforced) and say how it ended."""
        ...

    async def cancel(self, handle: dict[str, Any]) -> None:
        """Stop the attempt and everything it started; ``wait`` then reports CANCELLED."""
        ...

    async def adopt(self, handle: dict[str, Any], sink: LogSink) -> bool:
        """Re-attach after a restart; False when the attempt is gone (the engine marks it LOST)."""
        ...

    async def close(self) -> None: ...


class Recoverable(Protocol):
    """What an executor with ``capabilities.recoverable`` also does, so that a ``kill -9`` of the
    server at any moment neither loses an attempt's result nor starts an attempt twice.

    The engine records an attempt (pending) before ``start``, its handle after, and its result
    after ``wait``: a server that dies between two of these leaves the store behind the executor.
    So the executor keeps the result until the store has it (``release``), and can tell an
    adopting server about an attempt whose handle was never stored (``find``)."""

    async def find(self, attempt_id: str) -> dict[str, Any] | None:
        """The handle of the attempt ``attempt_id`` if it was started (running or ended), else
        None: it never started and may be started again."""
        ...

    async def release(self, handle: dict[str, Any]) -> None:
        """The store holds the attempt's result: drop what was kept for it (files, processes it
        left behind). Idempotent."""
        ...

    def leftovers(self) -> list[dict[str, Any]]:
        """Handles of attempts kept here that no live process or follower of this executor
        needs (ended, or their process is gone): released once the store says they are final."""
        ...


@dataclasses.dataclass(frozen=True, kw_only=True)
class Held:
    """An attempt an executor made ready (``Holding.start_held``): its process is prepared and
    waits; ``go`` lets it run the stage's code (the attempt is then started: ``wait`` follows
    it), ``abort`` ends it having run none of it. Exactly one of them is called."""

    handle: dict[str, Any]
    go: Callable[[], None]
    abort: Callable[[], None]


class Holding(Protocol):
    """What an executor that can prepare an attempt ahead of its record also does. The engine
    records an attempt before it starts it (a restarted server must know it); a held attempt
    prepares meanwhile and runs its code only once the record is stored."""

    async def start_held(self, spec: AttemptSpec, sink: LogSink) -> Held | None:
        """The attempt made ready, or None (nothing started) when this executor cannot hold it
        now; ``start`` then starts it as usual. Raises nothing ``start`` would not."""
        ...


def holding(executor: Executor) -> Holding | None:
    """``executor`` as a ``Holding`` when it can hold attempts."""
    return cast(Holding, executor) if callable(getattr(executor, "start_held", None)) else None


def recoverable(executor: Executor) -> Recoverable | None:
    """``executor`` as a ``Recoverable`` when its capabilities say it is one."""
    if not executor.capabilities.recoverable:
        return None
    return cast(Recoverable, executor)


def collected_result(io_dir: pathlib.Path) -> AttemptResult:
    """A stage's outputs and route left in ``io_dir`` (``runtime.results``, the one protocol of
    every entrypoint) as the result of its exit 0; a failure naming what is wrong with them."""
    try:
        body = results.collect(io_dir)
    except results.ResultError as exc:
        return AttemptResult(exit_code=0, failure=states.FailureKind.EXIT_CODE, error=str(exc))
    return AttemptResult(exit_code=0, outputs=body["outputs"], route=body["route"])
