"""Drive one run: start ready stages, wait for attempts, retry durably, skip, cancel, finish.

All state lives in the store; the driver only holds what it can rebuild from it, so a restarted
engine resumes a run where it stopped (a retry waiting for its delay keeps its ``retry_at``).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime as dt
import functools
import logging
import time
from typing import TYPE_CHECKING, Any, TypeVar

from kubeline.domain import errors, expressions, retries, runs, states
from kubeline.engine import planner
from kubeline.executors import base
from kubeline.logs import masking
from kubeline.storage import base as storage

if TYPE_CHECKING:
    from kubeline.engine.engine import Engine

log = logging.getLogger(__name__)
QUICK_END = 0.05  # seconds: a stage that ends within this has its start and end in one transaction
QUICK_TURNS = 8  # and within this many turns of the event loop (see _quick: only these for most executors)
S = states.StageState
A = states.AttemptState


class RunDriver:
    def __init__(self, *, engine: Engine, run: runs.Run, fence: storage.Fence | None = None,
                 stages: list[runs.StageRun] | None = None,
                 started: tuple[list[PlannedAttempt], list[_Record]] | None = None) -> None:
        self.engine = engine
        self.run = run
        self.fence = fence  # carried by every write: they fail (LeaseLostError) once the run is adopted elsewhere
        self._claimed_stages = stages  # of a run just taken from the queue (read by the claim; no attempts yet)
        self._started = started  # its first attempts, recorded by the claim (``first_attempts``), and their records
        self._last_check = asyncio.get_running_loop().time()  # ``run`` was read just now
        self.graph = {s.id: list(s.depends_on) for s in run.spec.stages}
        self.stages: dict[str, runs.StageRun] = {}
        self.outputs: dict[str, dict[str, Any]] = {}
        self.route: str | None = run.route
        self.cancel_event = asyncio.Event()
        self.wakeup = asyncio.Event()
        self.handles: dict[str, tuple[base.Executor, dict[str, Any]]] = {}
        self.tasks: dict[asyncio.Task[None], str] = {}
        self.starting: set[str] = set()  # stages whose attempt is being recorded, task not yet spawned
        self.ended: runs.Run | None = None  # the run as its last stage's transaction ended it
        self.maskers: dict[str, masking.Masker] = {}  # per stage: its secrets, masked in what it hands back

    @property
    def store(self) -> storage.Store:
        return self.engine.store

    async def drive(self) -> runs.Run:
        claimed, self._claimed_stages = self._claimed_stages, None
        for stage_run in claimed if claimed is not None else await self.store.list_stage_runs(self.run.id):
            self.stages[stage_run.stage_id] = stage_run
            if stage_run.state is S.SUCCEEDED:
                self.outputs[stage_run.stage_id] = stage_run.outputs
        if claimed is None:  # a run straight from the queue has no attempt to adopt
            await self._resume_in_flight()
        try:
            if self._started is not None:
                self._start_recorded(*self._started)
                self._started = None
            while True:
                if self.cancel_event.is_set() or await self._cancel_requested():
                    await self._cancel_everything()
                    break
                await self._advance()
                if not self.tasks and all(states.is_final(s.state) for s in self.stages.values()):
                    break
                await self._wait_for_something()
        finally:
            for task in self.tasks:
                task.cancel()
            if self.tasks:  # their last writes (an attempt's handle) land before the driver ends
                await asyncio.wait(list(self.tasks))
        return await self._finish()

    async def _cancel_requested(self) -> bool:
        """Another process may have asked (``kubeline cancel``); checked at most once a second."""
        loop = asyncio.get_running_loop()
        if loop.time() - self._last_check < self.engine.poll_interval:
            return False
        self._last_check = loop.time()
        self.run = await self.store.get_run(self.run.id)
        return bool(self.run.cancel_requested)

    async def _set_stage(self, stage_id: str, to: states.StageState, *, reason: str = "", **fields: Any) -> None:
        self.stages[stage_id] = await self.store.transition_stage(
            self.run.id, stage_id, to, reason=reason, fence=self.fence, **fields)
        self.engine.notify(self.run.id)

    async def _advance(self) -> None:
        now = runs.utcnow()
        for stage_id, deps in self.graph.items():
            stage = self.stages[stage_id]
            if stage.state is S.WAITING:
                blocked = [d for d in deps if states.is_final(self.stages[d].state)
                           and self.stages[d].state is not S.SUCCEEDED]
                if blocked:
                    await self._set_stage(stage_id, S.SKIPPED, reason=f"upstream stage {blocked[0]!r} "
                                          f"ended {self.stages[blocked[0]].state.value}")
        startable = self._startable(now)
        if len(startable) == 1:
            stage_id, reason = startable[0]
            self._spawn(stage_id, self._attempt(stage_id, reason=reason))
        elif startable:  # a fan-out: every start recorded in one transaction
            await self._record_and_start([], [self._new_attempt(s, reason=r) for s, r in startable])

    def _startable(self, now: dt.datetime, *, succeeded: str | None = None) -> list[tuple[str, str]]:
        """Stages to start now, with the reason, in graph order within ``parallelism``.

        ``succeeded``: as if that stage had succeeded and its task (the caller) had ended.
        """
        busy = {s for s in self.tasks.values() if s != succeeded} | self.starting  # a set: a fan-out asks per end
        return _startable(self.run, self.graph, self.stages, busy=busy, now=now, succeeded=succeeded)

    def _start_recorded(self, planned: list[PlannedAttempt], done: list[_Record],
                        holds: dict[str, _Hold] | None = None) -> None:
        """Start the attempts of ``planned``, recorded already (``done``: the records of their
        moves); those in ``holds`` are made ready already, and only let go."""
        at = 0
        for new in planned:
            self._recorded(new, done[at:at + len(new.moves)])
            at += len(new.moves)
            hold = holds.pop(new.stage_id, None) if holds else None
            if not self.cancel_event.is_set():  # else the cancel marks them cancelled
                task = self._spawn(new.stage_id, self._attempt(new.stage_id, reason="", recorded=new, hold=hold))
                if hold is not None:  # its task owns it now: ended, it lets go of the hold
                    task.add_done_callback(functools.partial(self._dropped, hold))
            elif hold is not None:
                self._drop(hold)
        self.engine.notify(self.run.id)

    def _spawn(self, stage_id: str, coro: Any) -> asyncio.Task[None]:
        task = asyncio.create_task(coro, name=f"attempt {self.run.id}/{stage_id}")
        self.tasks[task] = stage_id
        return task

    async def _wait_for_something(self) -> None:
        timeout = self.engine.poll_interval
        retry_times = [s.retry_at for s in self.stages.values() if s.state is S.RETRYING and s.retry_at]
        if retry_times:
            timeout = max(0.0, min(timeout, (min(retry_times) - runs.utcnow()).total_seconds()))
        waiters: set[asyncio.Future[Any]] = set(self.tasks)
        cancel_wait = asyncio.ensure_future(self.cancel_event.wait())
        waiters.add(cancel_wait)
        try:
            done, _ = await asyncio.wait(waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            cancel_wait.cancel()
        for task in done:
            if task is cancel_wait:
                continue
            self.tasks.pop(task, None)  # type: ignore[call-overload]
            failure = None if task.cancelled() else task.exception()
            if failure is not None:
                raise failure

    # attempts ---------------------------------------------------------------------------
    async def _attempt(self, stage_id: str, *, reason: str, recorded: PlannedAttempt | None = None,
                       hold: _Hold | None = None) -> None:
        """Make the stage pending (when it is not yet) and record a new attempt, in one transaction
        (``recorded``: that was done already, with the transaction that let the stage start;
        ``hold``: and its attempt was made ready meanwhile, holding its slot, see ``_hold``)."""
        new = recorded
        if new is None:
            new = self._new_attempt(stage_id, reason=reason)
            self._recorded(new, await self.store.apply(new.moves, fence=self.fence))
            self.engine.notify(self.run.id)
        attempt, eff = new.attempt, new.eff
        if hold is not None:
            await self._start_and_wait(attempt, stage_id=stage_id, eff=eff, hold=hold)
            return
        async with self.engine.attempt_slots:
            await self._start_and_wait(attempt, stage_id=stage_id, eff=eff)

    async def _hold(self, starts: list[PlannedAttempt]) -> dict[str, _Hold]:
        """The attempts of ``starts`` their executor can make ready while the transaction that
        records them runs (``base.Holding``): prepared up to the stage's code, which runs once
        they are recorded (``_start_and_wait``), else never (``_drop``). Each takes its attempt
        slot now, if one is free; a start that cannot be held starts as usual after the record."""
        holds: dict[str, _Hold] = {}
        try:
            for new in starts:
                hold = await self._hold_one(new)
                if hold is not None:
                    holds[new.stage_id] = hold
        except BaseException:
            for hold in holds.values():
                self._drop(hold)
            raise
        return holds

    async def _hold_one(self, new: PlannedAttempt) -> _Hold | None:
        slots = self.engine.attempt_slots
        try:
            executor = self.engine.executor(new.eff.executor)
            holding = base.holding(executor)
            if holding is None or slots.locked():
                return None
            spec, secret_values = await self._spec(new.attempt, stage_id=new.stage_id, eff=new.eff,
                                                   executor=executor)
        except (errors.KubelineError, expressions.ExpressionError):
            return None  # the start as usual says why
        sink = self.engine.logs.sink(run_id=self.run.id, stage_id=new.stage_id, attempt=new.attempt.number,
                                     secrets=secret_values.values())  # no file until its first line
        held = None
        if not slots.locked():
            await slots.acquire()  # free: taken at once
            try:
                held = await holding.start_held(spec, sink)
            except errors.KubelineError:
                pass  # the start as usual says why
            finally:
                if held is None:
                    slots.release()
        return None if held is None else _Hold(held=held, sink=sink, executor=executor, slots=slots)

    def _dropped(self, hold: _Hold, task: asyncio.Task[None]) -> None:
        self._drop(hold)

    def _drop(self, hold: _Hold) -> None:
        """Let go of a hold: its attempt is aborted unless it was let run (``go``); its slot is free."""
        if hold.done:
            return
        hold.done = True
        if not hold.went:
            with contextlib.suppress(Exception):
                hold.held.abort()
            hold.sink.close()
        hold.slots.release()

    async def _spec(self, attempt: runs.Attempt, *, stage_id: str, eff: planner.Effective,
                    executor: base.Executor) -> tuple[base.AttemptSpec, dict[str, str]]:
        """The attempt's spec on ``executor`` and its secrets' values; raises what makes it fail
        to start."""
        stage = planner.stage_of(self.run, stage_id)
        secret_values = await self._secret_values(stage)
        spec = planner.build(run=self.run, stage=stage, attempt=attempt, settings=eff,
                             outputs=self.outputs, secret_values=secret_values)
        if spec.env_from and not executor.name.startswith("kubernetes"):
            raise errors.ExecutorError(
                f"env {', '.join(sorted(spec.env_from))} use valueFrom, which only the kubernetes "
                f"executor resolves (this stage runs on {executor.name!r})")
        return spec, secret_values

    def _new_attempt(self, stage_id: str, *, reason: str) -> PlannedAttempt:
        return _new_attempt(self.run, self.stages[stage_id], reason=reason,
                            default_executor=self.engine.default_executor)

    def _recorded(self, new: PlannedAttempt, done: list[runs.StageRun | runs.Attempt | runs.Run]) -> None:
        if len(done) == 2:
            self.stages[new.stage_id] = _as(runs.StageRun, done[0])
        self.stages[new.stage_id] = dataclasses.replace(self.stages[new.stage_id], attempts=new.attempt.number)

    async def _start_and_wait(self, attempt: runs.Attempt, *, stage_id: str, eff: planner.Effective,
                              hold: _Hold | None = None) -> None:
        if hold is not None:  # made ready while it was recorded: it runs from now on
            executor, sink, handle = hold.executor, hold.sink, hold.held.handle
            sink.write("system", f"attempt {attempt.number} of stage {stage_id!r} starting on {executor.name}")
            hold.went = True
            hold.held.go()
        else:
            try:
                executor = self.engine.executor(eff.executor)
                spec, secret_values = await self._spec(attempt, stage_id=stage_id, eff=eff, executor=executor)
            except (errors.KubelineError, expressions.ExpressionError) as exc:
                await self._start_failed(attempt, stage_id=stage_id, error=str(exc))
                return
            sink = self.engine.logs.sink(run_id=self.run.id, stage_id=stage_id, attempt=attempt.number,
                                         secrets=secret_values.values())
            sink.write("system", f"attempt {attempt.number} of stage {stage_id!r} starting on {executor.name}")
            try:
                handle = await executor.start(spec, sink)
            except errors.ExecutorError as exc:
                sink.write("system", f"could not start: {exc}")
                sink.close()
                await self._start_failed(attempt, stage_id=stage_id, error=str(exc))
                return
        began = {"started_at": runs.utcnow()}  # running from now on, also when recorded later (see below)
        moves: list[storage.Move] = [storage.AttemptMove(attempt_id=attempt.id, to=A.RUNNING, reason="started",
                                                         fields={"handle": handle, **began})]
        if self.stages[stage_id].state is S.PENDING:
            moves.append(storage.StageMove(run_id=self.run.id, stage_id=stage_id, to=S.RUNNING,
                                           reason=f"attempt {attempt.number} started", fields=began))
        # A stage that ends within QUICK_END has its start and its end recorded in one transaction
        # (a transaction less per stage). Else recording "running" (with the handle a restarted
        # server adopts it by) overlaps the attempt: the result is recorded only after it (the
        # state machine needs running first); a write that is still going on when this task is
        # cancelled completes on its own.
        self.handles[attempt.id] = (executor, handle)  # a cancel reaches it from now on
        ending = asyncio.ensure_future(executor.wait(handle))
        try:
            await _quick(ending, within=QUICK_END if base.recoverable(executor) is not None else 0.0)
        except asyncio.CancelledError:
            self.handles.pop(attempt.id, None)
            # the attempt runs on, to be adopted by its handle: stored before this task ends (a
            # shutdown then releases the lease only after it), whatever the write's outcome
            with contextlib.suppress(Exception):
                await asyncio.shield(self._record_running(moves))
            raise
        if ending.done() and not ending.cancelled() and ending.exception() is None:
            await self._wait(executor, attempt, handle=handle, sink=sink, eff=eff, ending=ending, started=moves)
            return
        recording = self._record_running(moves)
        await self._wait(executor, attempt, handle=handle, sink=sink, eff=eff, recording=recording, ending=ending)

    def _record_running(self, moves: list[storage.Move]) -> asyncio.Future[list[_Record]]:
        recording = asyncio.ensure_future(self.store.apply(moves, fence=self.fence))
        recording.add_done_callback(self._running_recorded)
        return recording

    def _running_recorded(self, recording: asyncio.Future[list[runs.StageRun | runs.Attempt | runs.Run]]) -> None:
        if not recording.cancelled() and recording.exception() is None:  # else raised where awaited
            self.engine.notify(self.run.id)

    async def _wait(self, executor: base.Executor, attempt: runs.Attempt, *, handle: dict[str, Any],
                    sink: base.LogSink, eff: planner.Effective,
                    recording: asyncio.Future[list[runs.StageRun | runs.Attempt | runs.Run]] | None = None,
                    ending: asyncio.Future[base.AttemptResult] | None = None,
                    started: list[storage.Move] | None = None) -> None:
        """Wait for the attempt's end and record it (``started``: with the moves that record its
        start, not recorded yet; ``ending``: ``executor.wait(handle)`` already awaited elsewhere)."""
        self.handles[attempt.id] = (executor, handle)
        try:
            result = await (executor.wait(handle) if ending is None else ending)
            if recording is not None:
                done = await asyncio.shield(recording)
                if len(done) == 2:
                    self.stages[attempt.stage_id] = _as(runs.StageRun, done[1])
        except asyncio.CancelledError:
            sink.close()  # no longer driven here (shutdown, or the lease was lost); the attempt runs on
            if recording is not None:  # its handle stored before this task ends (see _start_and_wait)
                with contextlib.suppress(Exception):
                    await asyncio.shield(recording)
            raise
        finally:
            self.handles.pop(attempt.id, None)
        if not result.succeeded:
            sink.write("system", f"attempt {attempt.number} {result.failure}: {result.error}")
        sink.close()
        await self._finish_attempt(attempt, result=result, eff=eff, started=started or [])
        keeper = base.recoverable(executor)
        if keeper is not None:  # only now: a crash before the result was stored leaves it to adopt
            await keeper.release(handle)

    async def _secret_values(self, stage: Any) -> dict[str, str]:
        values = await self.engine.secret_values(self.run, stage)
        self.maskers[stage.id] = masking.Masker(values.values())
        return values

    def _masked(self, stage_id: str, result: base.AttemptResult) -> base.AttemptResult:
        """What the attempt hands back, with its secrets masked as in its log (before it is stored)."""
        mask = self.maskers.get(stage_id)
        if not mask:
            return result
        return dataclasses.replace(result, outputs=mask.data(result.outputs), error=mask(result.error),
                                   route=mask(result.route) if result.route else result.route)

    async def _start_failed(self, attempt: runs.Attempt, *, stage_id: str, error: str) -> None:
        mask = self.maskers.get(stage_id)
        error = mask(error) if mask else error
        await self._finish_both(
            storage.AttemptMove(attempt_id=attempt.id, to=A.FAILED, reason=error,
                                fields={"failure": states.FailureKind.START_FAILED, "error": error}),
            storage.StageMove(run_id=self.run.id, stage_id=stage_id, to=S.FAILED, reason=error,
                              fields={"error": error}))

    async def _finish_attempt(self, attempt: runs.Attempt, *, result: base.AttemptResult,
                              eff: planner.Effective, started: list[storage.Move] | None = None) -> None:
        """Record the attempt's end and its stage's next state (``started``: after these moves, in
        the same transaction: the attempt's start, when it ended before that was recorded)."""
        first = started or []
        stage_id = attempt.stage_id
        result = self._masked(stage_id, result)
        # an attempt that ended while no server ran (adopted since) keeps its real end time
        ended: dict[str, Any] = {} if result.ended_at is None else {
            "finished_at": dt.datetime.fromtimestamp(min(result.ended_at, time.time()), dt.UTC)}
        if ended and first:  # started and ended before its start was recorded: not after its end
            first = _started_by(first, ended["finished_at"])
        if self.stages[stage_id].state is S.PENDING and not first:  # adopted attempts may not have marked it
            await self._set_stage(stage_id, S.RUNNING, reason="attempt adopted")
        if result.succeeded:
            self.outputs[stage_id] = result.outputs
            if result.route:
                self.route = result.route
            # The stages this success lets start are recorded in the same transaction (one
            # transaction less between two stages of a chain), then started as _advance would.
            starts = [] if self.cancel_event.is_set() or self.run.cancel_requested else [
                self._new_attempt(s, reason=r) for s, r in self._startable(runs.utcnow(), succeeded=stage_id)]
            self.starting.update(new.stage_id for new in starts)  # as _record_and_start does, from now
            try:
                holds = await self._hold(starts) if starts else {}
            except BaseException:
                self.starting.difference_update(new.stage_id for new in starts)
                raise
            await self._finish_both(
                storage.AttemptMove(attempt_id=attempt.id, to=A.SUCCEEDED, reason="exited 0",
                                    fields={"exit_code": result.exit_code, "outputs": result.outputs, **ended}),
                storage.StageMove(run_id=self.run.id, stage_id=stage_id, to=S.SUCCEEDED,
                                  reason=f"attempt {attempt.number} succeeded",
                                  fields={"outputs": result.outputs, **ended}),
                starts=starts, first=first, holds=holds)
            return
        failure = result.failure or states.FailureKind.EXIT_CODE
        attempt_move = storage.AttemptMove(
            attempt_id=attempt.id, to=states.attempt_state_for(failure), reason=result.error,
            fields={"exit_code": result.exit_code, "failure": failure, "error": result.error, **ended})
        cancelling = self.cancel_event.is_set()
        if not cancelling and retries.should_retry(eff.retries, attempt_number=attempt.number, kind=failure):
            delay = retries.delay_before(eff.retries, retry_number=attempt.number)
            retry_at = runs.utcnow() + dt.timedelta(seconds=delay)
            await self._finish_both(attempt_move, storage.StageMove(
                run_id=self.run.id, stage_id=stage_id, to=S.RETRYING, reason=f"{result.error}; retry in {delay:g}s",
                fields={"retry_at": retry_at, "error": result.error}), first=first)
            return
        final = S.CANCELLED if cancelling else states.stage_state_for(failure)
        await self._finish_both(attempt_move, storage.StageMove(
            run_id=self.run.id, stage_id=stage_id, to=final, reason=result.error,
            fields={"error": result.error, **ended}), first=first)

    async def _finish_both(self, attempt_move: storage.AttemptMove, stage_move: storage.StageMove, *,
                           starts: list[PlannedAttempt] | None = None, first: list[storage.Move] | None = None,
                           holds: dict[str, _Hold] | None = None) -> None:
        """The attempt's final state and its stage's next state (and ``starts``), in one transaction
        (after ``first``); when that stage was the last one left, the run's end too (a transaction
        less per run)."""
        first = first or []
        end = None if starts else await self._end_with(stage_move)
        done = await self._record_and_start([*first, attempt_move, stage_move, *([end] if end else [])],
                                            starts or [], holds=holds)
        self.stages[stage_move.stage_id] = _as(runs.StageRun, done[len(first) + 1])
        if end is not None:
            self.ended = self.run = _as(runs.Run, done[len(first) + 2])

    async def _end_with(self, stage_move: storage.StageMove) -> storage.RunMove | None:
        """The run's end if ``stage_move`` leaves every stage final, nothing else runs or starts and
        no cancel is asked (else ``drive`` ends the run as usual, in a transaction of its own)."""
        stage_id = stage_move.stage_id
        if (self.cancel_event.is_set() or self.run.cancel_requested or self.starting
                or any(s != stage_id for s in self.tasks.values())):
            return None
        now = self.stages[stage_id]
        after = {**self.stages, stage_id: dataclasses.replace(
            now, state=stage_move.to, error=stage_move.fields.get("error", now.error),
            finished_at=stage_move.fields.get("finished_at"))}  # None: the transaction's time
        if not all(states.is_final(s.state) for s in after.values()):
            return None
        return await self._end(after, cancelled=False)

    async def _record_and_start(self, moves: list[storage.Move], starts: list[PlannedAttempt], *,
                                holds: dict[str, _Hold] | None = None) -> list[runs.StageRun | runs.Attempt | runs.Run]:
        """``moves`` and the new attempts of ``starts`` in one transaction, then start those
        (``holds``: those made ready meanwhile, let go of if the transaction fails); the records
        of ``moves``."""
        self.starting.update(new.stage_id for new in starts)
        try:
            done = await self.store.apply([*moves, *(m for new in starts for m in new.moves)], fence=self.fence)
        except BaseException:
            for hold in (holds or {}).values():
                self._drop(hold)
            raise
        finally:
            self.starting.difference_update(new.stage_id for new in starts)
        self._start_recorded(starts, done[len(moves):], holds)
        return done[:len(moves)]

    async def _resume_in_flight(self) -> None:
        """After a restart: adopt attempts that still run (also those started whose handle was never
        stored), start those recorded but never started, fail the ones that are gone."""
        for attempt in await self.store.list_attempts(self.run.id):
            if states.is_final(attempt.state):
                continue
            stage = planner.stage_of(self.run, attempt.stage_id)
            eff = planner.effective(self.run, stage, default_executor=self.engine.default_executor)
            executor = self.engine.executors.get(attempt.executor)
            handle = attempt.handle if attempt.state is A.RUNNING else None
            keeper = None if executor is None else base.recoverable(executor)
            if attempt.state is A.PENDING and keeper is not None:
                handle = await keeper.find(attempt.id)  # started, its handle never stored?
                if handle is None and self.stages[attempt.stage_id].state is S.PENDING:
                    # recorded, never started (the server died first): this attempt starts now
                    self._spawn(attempt.stage_id, self._attempt(attempt.stage_id, reason="", recorded=PlannedAttempt(
                        stage_id=attempt.stage_id, attempt=attempt, eff=eff, moves=[])))
                    continue
            sink = self.engine.logs.sink(run_id=self.run.id, stage_id=attempt.stage_id,
                                         attempt=attempt.number, secrets=await self._secret_values_safe(stage))
            adopted = False
            if handle is not None and executor is not None and executor.capabilities.adopt:
                adopted = await executor.adopt(handle, sink)
            if adopted:
                assert executor is not None and handle is not None
                # said before any await: an attempt that ended meanwhile closes its sink as soon
                # as its task runs, and a line written after that is dropped
                sink.write("system", f"attempt {attempt.number} adopted after a restart")
                running = attempt if attempt.state is A.RUNNING else await self._found_running(attempt, handle=handle)
                self._spawn(attempt.stage_id, self._wait(executor, running, handle=handle, sink=sink, eff=eff))
                continue
            reason = "lost: the process ended while Kubeline was not running"
            sink.write("system", f"attempt {attempt.number} {reason}")
            sink.close()
            if attempt.state is A.PENDING:
                await self.store.transition_attempt(attempt.id, A.FAILED, reason=reason, fence=self.fence,
                                                    failure=states.FailureKind.LOST, error=reason)
                if self.stages[attempt.stage_id].state is S.PENDING:
                    continue  # never started: simply start it again
            await self._finish_attempt(attempt, eff=eff, result=base.AttemptResult(
                exit_code=None, failure=states.FailureKind.LOST, error=reason))

    async def _found_running(self, attempt: runs.Attempt, *, handle: dict[str, Any]) -> runs.Attempt:
        """Record as running (with its handle) an attempt the executor started for a server that
        died before it could: adopted, not started again. It started when it was recorded (just
        before the dead server started it), not now: it may even have ended already."""
        began = {"started_at": attempt.created_at}
        moves: list[storage.Move] = [storage.AttemptMove(
            attempt_id=attempt.id, to=A.RUNNING, reason="started (found running after a restart)",
            fields={"handle": handle, **began})]
        if self.stages[attempt.stage_id].state is S.PENDING:
            moves.append(storage.StageMove(run_id=self.run.id, stage_id=attempt.stage_id, to=S.RUNNING,
                                           reason=f"attempt {attempt.number} started", fields=began))
        done = await self.store.apply(moves, fence=self.fence)
        if len(done) == 2:
            self.stages[attempt.stage_id] = _as(runs.StageRun, done[1])
        return _as(runs.Attempt, done[0])

    async def _secret_values_safe(self, stage: Any) -> list[str]:
        try:
            return list((await self._secret_values(stage)).values())
        except errors.KubelineError:
            return []

    # cancel and finish ------------------------------------------------------------------
    async def _cancel_everything(self) -> None:
        for executor, handle in list(self.handles.values()):
            try:
                await executor.cancel(handle)
            except errors.ExecutorError as exc:  # keep cancelling the others
                log.warning("cancel failed for run %s: %s", self.run.id, exc)
        if self.tasks:
            await asyncio.wait(list(self.tasks), timeout=max(self.engine.cancel_grace, 1.0))
        for task in self.tasks:
            task.cancel()
        self.tasks.clear()
        for stage_id, stage in self.stages.items():
            if not states.is_final(stage.state) and states.allowed(stage.state, S.CANCELLED):
                await self._set_stage(stage_id, S.CANCELLED, reason="run cancelled")
        for attempt in await self.store.list_attempts(self.run.id):
            if not states.is_final(attempt.state):
                await self.store.transition_attempt(attempt.id, A.CANCELLED, reason="run cancelled", fence=self.fence,
                                                    failure=states.FailureKind.CANCELLED, error="cancelled")

    async def _finish(self) -> runs.Run:
        if self.ended is not None:  # with its last stage's end; watchers (metrics, SSE) still hear of the end
            self.engine.notify(self.run.id)
            return self.ended
        end = await self._end(self.stages, cancelled=self.cancel_event.is_set() or self.run.cancel_requested)
        self.run = await self.store.transition_run(self.run.id, end.to, reason=end.reason, spawn=end.spawn,
                                                   fence=self.fence, **end.fields)
        self.engine.notify(self.run.id)
        return self.run

    async def _end(self, stages: dict[str, runs.StageRun], *, cancelled: bool) -> storage.RunMove:
        """The run's move to its final state, as ``stages`` (all final) make it."""
        target = states.RunState.CANCELLED if cancelled else states.run_state_for(
            [stages[s].state for s in self.graph])
        error = ""
        if target is not states.RunState.SUCCEEDED:
            failed = [s for s in self.graph if stages[s].state not in (S.SUCCEEDED, S.SKIPPED)]
            if failed:
                first = stages[failed[0]]
                error = f"stage {failed[0]!r} {first.state.value}" + (f": {first.error}" if first.error else "")
        spawn = await self.engine.downstream_of(dataclasses.replace(self.run, state=target, route=self.route))
        # the run ended when its last stage did (not later, when an adopting server noticed)
        ends = [s.finished_at for s in stages.values()]
        ended = {} if None in ends or not ends else {"finished_at": max(e for e in ends if e is not None)}
        return storage.RunMove(run_id=self.run.id, to=target, reason=error or "all stages succeeded", spawn=spawn,
                               fields={"error": error, "outputs": self._run_outputs(), "route": self.route, **ended})

    def _run_outputs(self) -> dict[str, Any]:
        if not self.run.spec.outputs:
            return {k: v for k, v in self.outputs.items() if v}
        result: dict[str, Any] = {}
        for ref in self.run.spec.outputs:
            stage_id, _, key = ref.partition(".")
            values = self.outputs.get(stage_id, {})
            if key:
                if key in values:
                    result[ref] = values[key]
            else:
                result[stage_id] = values
        return result


def first_attempts(run: runs.Run, stages: list[runs.StageRun], *, default_executor: str) -> list[PlannedAttempt]:
    """The attempts a run just taken from the queue starts with (its ready stages, within
    ``parallelism``), as its driver's first step would make them: the claim records them in its
    own transaction (``Store.claim_runs(start=...)``) and the driver starts them (``started``).
    None for a run whose cancel was asked: its driver cancels it."""
    if run.cancel_requested:
        return []
    graph = {s.id: list(s.depends_on) for s in run.spec.stages}
    by_id = {s.stage_id: s for s in stages}
    if set(by_id) != set(graph):  # not the rows a queued run has: the driver sees to it
        return []
    return [_new_attempt(run, by_id[stage_id], reason=reason, default_executor=default_executor)
            for stage_id, reason in _startable(run, graph, by_id, busy=set(), now=runs.utcnow())]


def _startable(run: runs.Run, graph: dict[str, list[str]], stages: dict[str, runs.StageRun], *, busy: set[str],
               now: dt.datetime, succeeded: str | None = None) -> list[tuple[str, str]]:
    """``RunDriver._startable`` for ``busy`` stages (see there)."""
    limit = run.spec.parallelism or len(graph)
    found: list[tuple[str, str]] = []
    for stage_id, deps in graph.items():
        if len(busy) + len(found) >= limit:
            break
        stage = stages[stage_id]
        if stage_id in busy or stage_id == succeeded:
            continue
        if stage.state is S.PENDING:
            found.append((stage_id, ""))
        elif stage.state is S.WAITING and all(d == succeeded or stages[d].state is S.SUCCEEDED for d in deps):
            found.append((stage_id, "dependencies succeeded"))
        elif stage.state is S.RETRYING and stage.retry_at is not None and stage.retry_at <= now:
            found.append((stage_id, "retry delay elapsed"))
    return found


def _new_attempt(run: runs.Run, stage_run: runs.StageRun, *, reason: str, default_executor: str) -> PlannedAttempt:
    stage_id = stage_run.stage_id
    eff = planner.effective(run, planner.stage_of(run, stage_id), default_executor=default_executor)
    attempt = runs.Attempt(id=runs.new_id(), run_id=run.id, stage_id=stage_id, number=stage_run.attempts + 1,
                           executor=eff.executor)
    moves: list[storage.Move] = []
    if stage_run.state is not S.PENDING:
        moves.append(storage.StageMove(run_id=run.id, stage_id=stage_id, to=S.PENDING, reason=reason))
    moves.append(storage.NewAttempt(attempt=attempt))
    return PlannedAttempt(stage_id=stage_id, attempt=attempt, eff=eff, moves=moves)


def _started_by(moves: list[storage.Move], at: dt.datetime) -> list[storage.Move]:
    """``moves`` (an attempt's start, recorded with its end) saying it started at ``at`` (its
    real end) at the latest: a process that ends at once may end before ``start`` returns."""
    return [dataclasses.replace(move, fields={**move.fields, "started_at": at})
            if isinstance(move, (storage.AttemptMove, storage.StageMove)) and move.to in (A.RUNNING, S.RUNNING)
            and at < move.fields["started_at"] else move for move in moves]


async def _quick(ending: asyncio.Future[Any], *, within: float) -> None:
    """Until ``ending`` is done, for at least QUICK_TURNS turns of the event loop and ``within``
    seconds: on a busy loop (many runs at once) a turn can take longer than QUICK_END, and an
    attempt that ends at once (a fake, a cached result) needs a few turns to say so.

    ``within`` is QUICK_END only for a ``Recoverable`` executor (it finds an attempt by its id
    after a restart, handle stored or not); for the others the handle must reach the store as
    soon as before (a few turns), or a restart in between would start the attempt again."""
    deadline = asyncio.get_running_loop().time() + within
    for _ in range(QUICK_TURNS):
        if ending.done():
            return
        await asyncio.sleep(0)
    left = deadline - asyncio.get_running_loop().time()
    if left > 0 and not ending.done():
        await asyncio.wait([ending], timeout=left)


_T = TypeVar("_T")
_Record = runs.StageRun | runs.Attempt | runs.Run


@dataclasses.dataclass(kw_only=True)
class _Hold:
    """An attempt made ready before its record (``RunDriver._hold``), with its sink and its slot."""

    held: base.Held
    sink: base.LogSink
    executor: base.Executor
    slots: asyncio.Semaphore
    went: bool = False  # let run (``go``)
    done: bool = False  # let go of (``RunDriver._drop``): its slot is free again


@dataclasses.dataclass(frozen=True, kw_only=True)
class PlannedAttempt:
    """An attempt about to be recorded, with the moves that record it."""

    stage_id: str
    attempt: runs.Attempt
    eff: planner.Effective
    moves: list[storage.Move]


def _as(kind: type[_T], record: object) -> _T:
    assert isinstance(record, kind), f"store returned {type(record).__name__}, expected {kind.__name__}"
    return record
