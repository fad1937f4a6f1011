"""The engine: submits runs, claims queued ones (``max_instances`` honoured by the store), drives
each with a ``RunDriver``, fires downstream triggers, and cancels on request.

One engine per process. ``serve()`` dispatches every queued run (the server); ``execute()``
drives just one run to its end (``kubeline run`` without a server).

Replicas: every run this engine claims carries a lease in its name (``owner``) that it renews
every third of ``lease_seconds`` while it drives the run. ``resume()`` and ``serve()`` adopt
only running runs whose lease expired (their process died) or that nobody owns (released on a
clean ``shutdown()``), so two processes never drive the same run. A server replica's ``owner``
is its stable identity (``KUBELINE_REPLICA_ID``, else host name and pid), so after a restart it
reclaims the runs its earlier life leased at once instead of waiting for those leases to expire.

Fencing: each claim or adoption gives the run a new lease generation, and every write the driver
makes carries the one it got (``storage.Fence``). A process that stalled past its lease and whose
run was adopted elsewhere gets ``errors.LeaseLostError`` on its next write (nothing is written)
and stops driving the run; a renewal that finds the run adopted stops it too.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime as dt
import logging
import os
import socket
from collections.abc import Mapping
from typing import Any

from kubeline.domain import errors, runs, specs, states
from kubeline.engine import driver as driver_
from kubeline.engine import inputs as inputs_
from kubeline.engine import planner, ports
from kubeline.executors import base
from kubeline.storage import base as storage
from kubeline.storage import wakeups

log = logging.getLogger(__name__)
ENABLE_HINT = ("add it to KUBELINE_EXECUTORS (comma-separated) if user code may run there, or change the "
               "pipeline's executor")


class Engine:
    def __init__(
        self,
        *,
        store: storage.Store,
        executors: Mapping[str, base.Executor],
        logs: ports.Logs,
        secrets: ports.Secrets,
        default_executor: str = "local",
        max_concurrent_attempts: int = 16,
        poll_interval: float = 2.0,
        cancel_grace: float = 10.0,
        owner: str | None = None,
        lease_seconds: float = 30.0,
        caps: storage.ClaimCaps | None = None,
    ) -> None:
        self.store = store
        self.executors = dict(executors)
        self.logs = logs
        self.secrets = secrets
        self.default_executor = default_executor
        self.poll_interval = poll_interval
        self.cancel_grace = cancel_grace
        self.attempt_slots = asyncio.Semaphore(max_concurrent_attempts)
        self.max_concurrent_runs = max_concurrent_attempts  # runs serve() drives at once
        self.drivers: dict[str, driver_.RunDriver] = {}
        self._driver_tasks: dict[str, asyncio.Task[runs.Run]] = {}
        self._watchers: set[asyncio.Future[None]] = set()  # changed() callers, woken by notify()
        self.owner = owner or f"{socket.gethostname()}:{os.getpid()}:{os.urandom(3).hex()}"
        self.lease_seconds = lease_seconds
        self.caps = caps or storage.ClaimCaps(default_executor=default_executor)
        self._owned: dict[str, int] = {}  # run id -> the lease generation this engine holds
        # Leases of this owner that end before this are an earlier life's (same stable identity).
        self._reclaim_before = runs.utcnow() + dt.timedelta(seconds=lease_seconds)
        self._lease_task: asyncio.Task[None] | None = None

    def executor(self, name: str) -> base.Executor:
        if name == "local-warm" and name not in self.executors:
            name = "local"
        try:
            return self.executors[name]
        except KeyError:
            raise errors.ExecutorError(
                f"executor {name!r} is not configured here (available: {', '.join(self.executors)}); "
                f"{ENABLE_HINT}") from None

    async def secret_values(self, run: runs.Run, stage: specs.StageSpec) -> dict[str, str]:
        """The decrypted encrypted env and stored secrets a stage of ``run`` gets (name -> value)."""
        values: dict[str, str] = {}
        for layer in planner.encrypted_env(run):
            values.update(self.secrets.decrypt_env(layer))
        values.update(await self.secrets.resolve(planner.secret_names(run, stage)))
        return values

    def refuse_unknown_executors(self, pipeline: runs.Pipeline) -> None:
        """``SpecError`` naming each stage that would run on an executor this process does not
        register: user code runs only where the configuration says (never in the control plane
        unless ``local`` is named)."""
        found: list[errors.Problem] = []
        probe = runs.Run(id="check", pipeline=pipeline.name, inputs={}, spec=pipeline.spec)
        for pos, stage in enumerate(pipeline.spec.stages):
            name = planner.effective(probe, stage, default_executor=self.default_executor).executor
            if name in self.executors or (name == "local-warm" and "local" in self.executors):
                continue
            asked = stage.executor or pipeline.spec.executor
            found.append(errors.Problem(
                file=pipeline.name, location=f"stages[{pos}].executor" if stage.executor else "executor",
                message=f"stage {stage.id!r} asks for executor {name!r}, which this server does not run "
                        f"(it runs: {', '.join(sorted(self.executors))})",
                hint=ENABLE_HINT if asked else "set KUBELINE_EXECUTOR to one of those"))
        if found:
            raise errors.SpecError(found)

    # submitting -------------------------------------------------------------------------
    async def submit(
        self,
        pipeline: runs.Pipeline,
        *,
        inputs: dict[str, Any] | None = None,
        triggered_by: runs.TriggeredBy | None = None,
        schedule_id: str | None = None,
        parent_run_id: str | None = None,
        audit: dict[str, Any] | None = None,
    ) -> runs.Run:
        """Queue a run of ``pipeline``; inputs are validated (``InvalidInputError``) before anything is stored.
        ``audit``: the audit row of the request that makes it, stored with the run (``Store.create_run``)."""
        new = self.prepare(pipeline, inputs=inputs, triggered_by=triggered_by, schedule_id=schedule_id,
                           parent_run_id=parent_run_id)
        run = await self.store.create_run(new.run, new.stages, audit=audit)  # wakes the dispatchers
        self.notify(run.id)
        return run

    def prepare(
        self,
        pipeline: runs.Pipeline,
        *,
        inputs: dict[str, Any] | None = None,
        triggered_by: runs.TriggeredBy | None = None,
        schedule_id: str | None = None,
        parent_run_id: str | None = None,
    ) -> storage.NewRun:
        """A validated run of ``pipeline`` (``InvalidInputError``), not stored yet: the caller inserts
        it, possibly in the transaction of the change that causes it (a downstream run)."""
        spec = pipeline.spec
        given = dict(inputs or {})
        if schedule_id is not None:
            if schedule_id not in spec.schedule_ids():
                raise errors.NotFoundError(f"pipeline {pipeline.name!r} has no schedule {schedule_id!r}")
            schedule = spec.schedules[spec.schedule_ids().index(schedule_id)]
            given = {**schedule.inputs, **given}
        checked = inputs_.validate(spec, given)
        self.refuse_unknown_executors(pipeline)
        run = runs.Run(id=runs.new_id(), pipeline=pipeline.name, inputs=checked, spec=spec,
                       triggered_by=triggered_by or runs.TriggeredBy(), pipeline_path=pipeline.path,
                       schedule_id=schedule_id, parent_run_id=parent_run_id)
        stage_rows = [runs.StageRun(run_id=run.id, stage_id=s.id) for s in spec.stages]
        return storage.NewRun(run=run, stages=stage_rows)

    # driving ----------------------------------------------------------------------------
    def lease(self) -> storage.Lease:
        return storage.Lease(owner=self.owner, until=runs.utcnow() + dt.timedelta(seconds=self.lease_seconds))

    def _wake_dispatch(self) -> None:
        self.store.wakeups.deliver([(wakeups.Channel.DISPATCH, "")])

    async def serve(self, *, batch: int = 8) -> None:
        """Claim and drive queued runs until cancelled (the server's dispatcher loop); adopt the
        runs of processes that died (expired leases) as they are noticed.

        Woken by the store's DISPATCH wake-ups (a run queued, a slot freed, here or in another
        replica); ``poll_interval`` is only the safety net. A failing step (the database away for
        longer than the store retries a transaction) is logged and the loop goes on."""
        async with self.store.wakeups.subscribe(wakeups.Channel.DISPATCH) as dispatch:
            while True:
                try:
                    await self._serve(dispatch, batch=batch)
                except Exception:  # the database away for longer than the store retries: go on after it
                    log.exception("dispatcher: a step failed; going on in %.1fs", self.poll_interval)
                    await asyncio.sleep(self.poll_interval)

    async def _serve(self, dispatch: wakeups.Waiter, *, batch: int) -> None:
        loop = asyncio.get_running_loop()
        next_adopt = next_sweep = loop.time()
        while True:
            if loop.time() >= next_sweep:
                next_sweep = loop.time() + self.lease_seconds / 3
                await self.release_leftovers()
            # Claim only what this process can start now: runs held here while waiting for a slot
            # would starve other replicas (and their leases compete with real work for the database).
            free = self.max_concurrent_runs - len(self._driver_tasks)
            if free > 0 and loop.time() >= next_adopt:
                next_adopt = loop.time() + self.lease_seconds / 3
                for run in await self.store.adopt_runs(self.lease(), limit=min(free, batch),
                                                       reclaim_before=self._reclaim_before,
                                                       exclude=sorted(self._driver_tasks)):
                    log.info("run %s: adopted (its previous driver's lease expired or was this replica's "
                             "before a restart)", run.id)
                    self._owned[run.id] = run.lease_generation
                    self._start_driver(run)
                free = self.max_concurrent_runs - len(self._driver_tasks)
            claimed: list[tuple[storage.Claimed, list[driver_.PlannedAttempt]]] = []
            if free > 0:
                claimed = await self._claim(limit=min(batch, free))
            for new, planned in claimed:
                self._owned[new.run.id] = new.run.lease_generation
                self._start_driver(new.run, stages=new.stages,
                                   started=None if new.started is None else (planned, new.started))
            if len(claimed) < batch or free <= len(claimed):
                await dispatch.wait(within=self.poll_interval)

    async def _claim(self, *, limit: int, only: list[str] | None = None,
                     ) -> list[tuple[storage.Claimed, list[driver_.PlannedAttempt]]]:
        """Claim queued runs with their first attempts recorded in the claim's transaction (a
        transaction less per run than a driver recording them after the claim), each with the
        attempts planned for it."""
        planned: dict[str, list[driver_.PlannedAttempt]] = {}

        def start(run: runs.Run, stages: list[runs.StageRun]) -> list[storage.Move]:
            planned[run.id] = driver_.first_attempts(run, stages, default_executor=self.default_executor)
            return [move for new in planned[run.id] for move in new.moves]

        claimed = await self.store.claim_runs(limit=limit, only=only, lease=self.lease(), caps=self.caps, start=start)
        return [(new, planned.get(new.run.id, [])) for new in claimed]

    async def execute(self, run_id: str) -> runs.Run:
        """Drive one run to its end in this process (waiting in the queue while max_instances says so)."""
        async with self.store.wakeups.subscribe(wakeups.Channel.DISPATCH) as dispatch:
            return await self._execute(run_id, dispatch)

    async def _execute(self, run_id: str, dispatch: wakeups.Waiter) -> runs.Run:
        while True:
            stages: list[runs.StageRun] | None = None  # known when claimed here just now
            started: tuple[list[driver_.PlannedAttempt], list[Any]] | None = None
            run = await self.store.get_run(run_id)
            if run.state is states.RunState.QUEUED:
                claimed = await self._claim(limit=1, only=[run_id])
                if not claimed:
                    if run.cancel_requested:
                        return await self.store.transition_run(run_id, states.RunState.CANCELLED,
                                                               reason="cancelled while queued")
                    await dispatch.wait(within=self.poll_interval)
                    continue
                new, planned = claimed[0]
                run, stages = new.run, new.stages
                started = None if new.started is None else (planned, new.started)
                self._owned[run.id] = run.lease_generation
            if states.is_final(run.state):
                return run
            if run.id not in self._owned and run.id not in self._driver_tasks:
                # running elsewhere: drive it only once its owner is gone (lease expired/released)
                adopted = await self.store.adopt_runs(self.lease(), limit=1, only=[run_id])
                if not adopted:
                    await dispatch.wait(within=self.poll_interval)
                    continue
                run = adopted[0]
                self._owned[run_id] = run.lease_generation
            run = await self._start_driver(run, stages=stages, started=started)
            if states.is_final(run.state):
                return run
            # the lease was lost mid-run (LeaseLostError): the run ends under its new owner

    def _lost(self, run_id: str) -> None:
        self._owned.pop(run_id, None)

    async def resume(self) -> list[runs.Run]:
        """Drive the runs left running by a process that is gone (after a crash or restart):
        those nobody owns, those whose lease expired and those this replica leased before it
        restarted (at once). Runs of a live process are left alone."""
        free = max(self.max_concurrent_runs - len(self._driver_tasks), 0)
        # the rest: serve() adopts as slots free, a bounded number per tick
        left = await self.store.adopt_runs(self.lease(), limit=free, reclaim_before=self._reclaim_before,
                                           exclude=sorted(self._driver_tasks))
        self._owned.update((run.id, run.lease_generation) for run in left)
        tasks = [self._start_driver(run) for run in left if run.id not in self.drivers]
        return list(await asyncio.gather(*tasks))

    async def release_leftovers(self) -> int:
        """Let executors drop what they keep for attempts whose results the store has (left by a
        process that died between storing a result and releasing it, or by a cancelled driver);
        what the store does not hold as final stays, to be adopted. How many were released."""
        released = 0
        for executor in {id(e): e for e in self.executors.values()}.values():
            keeper = base.recoverable(executor)
            if keeper is None:
                continue
            for handle in keeper.leftovers():
                try:
                    attempt = await self.store.get_attempt(handle["attempt_id"])
                except errors.NotFoundError:  # not this database's (a shared home?): not ours to drop
                    continue
                if states.is_final(attempt.state):
                    await keeper.release(handle)
                    released += 1
        return released

    def _start_driver(self, run: runs.Run, *, stages: list[runs.StageRun] | None = None,
                      started: tuple[list[driver_.PlannedAttempt], list[Any]] | None = None,
                      ) -> asyncio.Task[runs.Run]:
        """Drive ``run`` in a task; ``stages``: its stage rows, read by the claim that just moved it
        from the queue (the driver then needs no read: neither of them nor of attempts to adopt,
        as a run from the queue has none); ``started``: the attempts the claim recorded for it,
        and the records of their moves (the driver starts them)."""
        if run.id in self._driver_tasks:
            return self._driver_tasks[run.id]
        if self._lease_task is None or self._lease_task.done():
            self._lease_task = asyncio.create_task(self._while_driving(), name="lease renewal")
        generation = self._owned.get(run.id)
        fence = None if generation is None else storage.Fence(run_id=run.id, generation=generation)
        driver = driver_.RunDriver(engine=self, run=run, fence=fence, stages=stages, started=started)
        self.drivers[run.id] = driver
        task = asyncio.create_task(self._drive(driver), name=f"run {run.id}")
        self._driver_tasks[run.id] = task
        return task

    async def _drive(self, driver: driver_.RunDriver) -> runs.Run:
        try:
            run = await driver.drive()
        except errors.LeaseLostError as exc:
            log.warning("%s; no longer driven here", exc)
            self._lost(driver.run.id)
            run = driver.run  # as last seen here: no more reads for a run driven elsewhere
        except Exception as exc:
            log.exception("run %s: the driver failed", driver.run.id)
            run = await self._fail_broken_run(driver.run.id, exc, fence=driver.fence)
        finally:
            self.drivers.pop(driver.run.id, None)
            self._driver_tasks.pop(driver.run.id, None)
            self._wake_dispatch()  # a slot of this engine is free
            if not self._driver_tasks and self._lease_task is not None:
                self._lease_task.cancel()  # nothing left to renew
                self._lease_task = None
        self._lost(run.id)
        return run

    async def _while_driving(self) -> None:
        await asyncio.gather(self._renew_leases(), self._watch_cancels())

    async def _watch_cancels(self) -> None:
        """Cancel requests (from any process) reach the driver at once through CANCEL wake-ups;
        the driver still checks the store every ``poll_interval`` in case one was missed."""
        async with self.store.wakeups.subscribe(wakeups.Channel.CANCEL) as cancels:
            while True:
                for run_id in await cancels.wait(within=3600):
                    driver = self.drivers.get(run_id)
                    if driver is not None:
                        driver.cancel_event.set()

    async def _renew_leases(self) -> None:
        """Renew the leases of the runs driven here; stop driving any adopted elsewhere."""
        while True:
            await asyncio.sleep(self.lease_seconds / 3)
            owned = sorted(set(self._owned) & set(self._driver_tasks))
            fences = [storage.Fence(run_id=run_id, generation=self._owned[run_id]) for run_id in owned]
            try:
                kept = set(await self.store.renew_leases(self.lease(), fences))
            except Exception:  # the database is away: keep driving, try again next period
                log.warning("lease renewal failed; retrying in %.1fs", self.lease_seconds / 3, exc_info=True)
                continue
            for run_id in set(owned) - kept:
                self._lost(run_id)
                task = self._driver_tasks.get(run_id)
                if task is not None:
                    log.warning("run %s: its lease was taken over by another process; no longer driven here",
                                run_id)
                    task.cancel()

    async def _fail_broken_run(self, run_id: str, exc: BaseException, *,
                               fence: storage.Fence | None = None) -> runs.Run:
        run = await self.store.get_run(run_id)
        if states.is_final(run.state):
            return run
        reason = f"internal error: {type(exc).__name__}: {exc}"
        spawn = await self.downstream_of(dataclasses.replace(run, state=states.RunState.FAILED))
        try:
            return await self.store.transition_run(run_id, states.RunState.FAILED, reason=reason, error=reason,
                                                   spawn=spawn, fence=fence)
        except errors.LeaseLostError as lost:
            log.warning("%s; no longer driven here", lost)
            return await self.store.get_run(run_id)

    async def cancel(self, run_id: str) -> runs.Run:
        """Cancel a queued or running run (here or in another process driving it)."""
        run = await self.store.request_cancel(run_id)
        driver = self.drivers.get(run_id)
        if driver is not None:
            driver.cancel_event.set()
        elif run.state is states.RunState.QUEUED:
            run = await self.store.transition_run(run_id, states.RunState.CANCELLED, reason="cancelled while queued")
        return run

    async def shutdown(self) -> None:
        """Stop driving (running attempts are left running, to be adopted by the next start,
        which can do so at once: the leases are released)."""
        for task in list(self._driver_tasks.values()):
            task.cancel()
        await asyncio.gather(*self._driver_tasks.values(), return_exceptions=True)
        if self._lease_task is not None:
            self._lease_task.cancel()
            await asyncio.gather(self._lease_task, return_exceptions=True)
            self._lease_task = None
        owned, self._owned = self._owned, {}
        try:
            await self.store.release_leases([storage.Fence(run_id=run_id, generation=generation)
                                             for run_id, generation in sorted(owned.items())])
        except Exception:  # leases then expire on their own
            log.warning("could not release the leases of %d runs", len(owned), exc_info=True)

    # notifications ----------------------------------------------------------------------
    async def driven(self, run_id: str, *, within: float) -> bool:
        """Wait, up to ``within`` seconds, for this engine's driver of ``run_id`` to end: True once
        it has (the run is final then, unless its driver stopped early: a lost lease, a shutdown),
        False at once when this engine drives no such run (another replica does, or none yet) or
        when ``within`` ran out. One wake-up at the end, where a waiter woken by each event of
        the run read the run again after each of its stages' moves."""
        task = self._driver_tasks.get(run_id)
        if task is None:
            return False
        done, _ = await asyncio.wait([task], timeout=max(0.0, within))
        return bool(done)

    def notify(self, run_id: str) -> None:
        """Wake watchers (``changed``) after a change of ``run_id``: at once, without a task (a
        driver notifies a few times per stage; a task each, to wake a Condition that nobody
        waited on in a burst, was a measurable part of a no-op run's cost)."""
        watchers, self._watchers = self._watchers, set()
        for watcher in watchers:
            if not watcher.done():
                watcher.set_result(None)

    async def changed(self, *, within: float) -> None:
        """Return at the next change (or after ``within`` seconds)."""
        watcher = asyncio.get_running_loop().create_future()
        self._watchers.add(watcher)
        try:
            with contextlib.suppress(TimeoutError):  # not wait_for: it can lose a cancel (wakeups.wait_event)
                async with asyncio.timeout(within):
                    await watcher
        finally:
            self._watchers.discard(watcher)

    # downstream -------------------------------------------------------------------------
    async def downstream_of(self, ending: runs.Run) -> list[storage.NewRun]:
        """The downstream runs ``ending`` (the run as it is about to end) causes, to be inserted in
        the transaction that ends it: a crash between the end and the downstream start is then
        impossible (both or neither are stored)."""
        made: list[storage.NewRun] = []
        for target in ending.spec.downstream:
            if not _matches(target, ending):
                continue
            try:
                pipeline = await self.store.get_pipeline(target.pipeline)
                new = self.prepare(
                    pipeline, inputs=target.inputs, schedule_id=target.schedule, parent_run_id=ending.id,
                    triggered_by=runs.TriggeredBy(kind=runs.TriggerKind.DOWNSTREAM,
                                                  detail=f"{ending.pipeline}/{ending.id}"))
            except errors.KubelineError as exc:
                log.warning("run %s: downstream %r not started: %s", ending.id, target.pipeline, exc)
                continue
            log.info("run %s triggers %s run %s", ending.id, target.pipeline, new.run.id)
            made.append(new)
        return made


def _matches(target: specs.DownstreamSpec, run: runs.Run) -> bool:
    succeeded = run.state is states.RunState.SUCCEEDED
    if run.state is states.RunState.CANCELLED:
        return False
    if target.route is not None:
        return succeeded and run.route == target.route
    return target.on == "always" or (target.on == "success") == succeeded
