"""Warm workers, a few per venv: start them, hand out forks, notice deaths, replace them.

A ``Worker`` is one ``warm_worker`` process of a venv's interpreter, driven over a socketpair
with one JSON line per request and per reply. Requests are pipelined: each is written at once
and its reply (matched by id) resolves its future, so the ready stages of a fan-out reach a
worker together and it serves them back to back, instead of one round trip after another. A
``Pool`` keeps ``size`` live workers of one venv: a request goes to the one with the fewest
requests in flight, and a spare means a worker's death costs nothing but the restart of a new
one in the background.

A worker that dies never takes an attempt with it: the attempts it started run on in their
own sessions (one that ends by itself still records its status, see ``warm_worker``). A
worker that dies *while* starting an attempt has started nothing (see ``warm_worker``), so the
request is retried on another worker and the attempt's log says why.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import os
import pathlib
import signal
import socket
import subprocess
from collections.abc import Callable
from typing import Any

from kubeline.domain import errors

log = logging.getLogger(__name__)

WORKER_SCRIPT = pathlib.Path(__file__).with_name("warm_worker.py")
_STARTUP_TIMEOUT = 60.0  # seconds: a cold interpreter on a loaded machine
_STOP_TIMEOUT = 5.0
_RETRIES = 3
_STDERR_KEPT = 2000
_DIRECT_MAX = 60_000  # bytes: a bigger request (large inputs) goes through the worker, never
# a pipe write that could block the loop while the spare reads


class WorkerDiedError(Exception):
    """The worker ended; the message says how (exit code or signal, its last stderr)."""


class RefusedError(errors.ExecutorError):
    """The worker started nothing and said why (a missing folder, a work dir it cannot make)."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class Forked:
    """The handle the worker wrote into the attempt's work dir before it replied (the request's
    ``handle`` plus ``pid``/``pgid``/``proc_start``: the attempt's process, session and process
    group leader, and its start time in clock ticks; ``warm_worker``; ``attempt_pid``/
    ``attempt_start``: the same process, named as the runtime worker of a pool pod reads it)."""

    handle: dict[str, Any]
    ended: int | None = None  # a start on an offered spare: where it writes its exit code as it ends


@dataclasses.dataclass(frozen=True, kw_only=True)
class _Offer:
    """A spare the worker offered: its pid, start time and our end of its request socket (on
    which it also writes its exit code as it ends)."""

    pid: int
    start: int | None
    requests: int


class Worker:
    def __init__(self, *, proc: asyncio.subprocess.Process, reader: asyncio.StreamReader,
                 writer: asyncio.StreamWriter, python: str, offers: socket.socket) -> None:
        self.proc = proc
        self.pid = proc.pid
        self.python = python
        self._reader = reader
        self._writer = writer
        self._ids = 0
        self._waiting: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._replies: asyncio.Task[None] | None = None
        self._offers = offers
        self._offer: _Offer | None = None
        self.ended: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self._monitor = asyncio.get_running_loop().create_task(self._watch())
        offers.setblocking(False)
        asyncio.get_running_loop().add_reader(offers.fileno(), self._read_offers)

    @classmethod
    async def start(cls, *, python: str, env: dict[str, str]) -> Worker:
        ours, theirs = socket.socketpair()
        offers, their_offers = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            proc = await asyncio.create_subprocess_exec(
                python, str(WORKER_SCRIPT), str(theirs.fileno()), str(their_offers.fileno()),
                pass_fds=(theirs.fileno(), their_offers.fileno()),
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                env=env, cwd="/", start_new_session=True)
        except OSError as exc:
            ours.close()
            offers.close()
            raise errors.ExecutorError(f"cannot start a warm worker with {python}: {exc}") from exc
        finally:
            theirs.close()
            their_offers.close()
        reader, writer = await asyncio.open_unix_connection(sock=ours)
        worker = cls(proc=proc, reader=reader, writer=writer, python=python, offers=offers)
        try:
            line = await asyncio.wait_for(reader.readline(), _STARTUP_TIMEOUT)
        except TimeoutError:
            line = b""
        if not line.startswith(b"{"):
            await worker.stop()
            raise errors.ExecutorError(f"the warm worker of {python} did not start: "
                                       f"{await worker.death()}")
        worker._replies = asyncio.get_running_loop().create_task(worker._read_replies())
        return worker

    @property
    def in_flight(self) -> int:
        """Requests written whose reply has not come yet."""
        return len(self._waiting)

    @property
    def alive(self) -> bool:
        return not self.ended.done() and not self._writer.is_closing()

    @property
    def offers_spare(self) -> bool:
        return self._offer is not None and self.alive

    def hand_over(self, request: dict[str, Any]) -> Forked | None:
        """Start the attempt of a ``local-warm`` request on the spare the worker offered, with
        one write to its request pipe (no round trip); None when there is none (or it is gone,
        or the request is too big for one write), and nothing started.

        The spare makes the work dir and ``handle.json`` itself, a moment after this returns
        (the worker made them before its reply): a server that dies in between and restarts
        would not ``find`` the attempt only if the spare were not scheduled for all that time."""
        offer, self._offer = self._offer, None
        if offer is None:
            return None
        if not self.alive:
            os.close(offer.requests)
            return None
        handle = {**request["handle"], "pid": offer.pid, "pgid": offer.pid,
                  "proc_start": offer.start, "warm_worker": self.pid,
                  "attempt_pid": offer.pid, "attempt_start": offer.start}
        data = json.dumps({**request, "handle": handle, "prepare": True}).encode() + b"\n"
        if len(data) > _DIRECT_MAX:
            self._offer = offer
            return None
        try:
            view = memoryview(data)
            while view:  # one write: the socket is empty and holds more (see _DIRECT_MAX)
                view = view[os.write(offer.requests, view):]
        except OSError:  # the spare is gone: the worker forks another
            os.close(offer.requests)
            self._writer.write(json.dumps({"taken": offer.pid, "work": None}).encode() + b"\n")
            return None
        self._writer.write(json.dumps({"taken": offer.pid, "work": request["work"]}).encode()
                           + b"\n")
        return Forked(handle=handle, ended=offer.requests)

    def _read_offers(self) -> None:
        while True:
            try:
                message, fds, _flags, _addr = socket.recv_fds(self._offers, 4096, 1)
            except BlockingIOError:
                return
            except OSError:
                message, fds = b"", []
            if not message:  # the worker is gone
                for fd in fds:
                    os.close(fd)
                self._close_offers()
                return
            offer = json.loads(message)
            if len(fds) != 1:
                for fd in fds:
                    os.close(fd)
                continue
            if self._offer is not None:
                os.close(self._offer.requests)
            self._offer = _Offer(pid=offer["pid"], start=offer["start"], requests=fds[0])

    def _close_offers(self) -> None:
        """Stop taking offers; an unused spare reads EOF and exits."""
        if self._offers.fileno() >= 0:
            with contextlib.suppress(ValueError, RuntimeError):  # the loop may be closed
                asyncio.get_running_loop().remove_reader(self._offers.fileno())
            self._offers.close()
        offer, self._offer = self._offer, None
        if offer is not None:
            os.close(offer.requests)

    async def fork(self, request: dict[str, Any]) -> Forked:
        """Have the worker fork a supervised attempt; ``WorkerDiedError`` if it is gone first
        (it then started nothing), ``RefusedError`` with its reason if it started nothing."""
        self._ids += 1
        number = self._ids
        reply: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._waiting[number] = reply
        try:
            if not self.alive:
                raise ConnectionError
            self._writer.write(json.dumps({**request, "id": number}).encode() + b"\n")
            answer = await reply
        except (ConnectionError, OSError):
            raise WorkerDiedError(f"warm worker {self.pid} ({self.python}) "
                                  f"{await self.death()}") from None
        finally:
            self._waiting.pop(number, None)
        if "error" in answer:
            raise RefusedError(answer["error"])
        return Forked(handle=answer["handle"])

    async def _read_replies(self) -> None:
        """Resolve each request's future with its reply; at the end, fail those still waiting
        (the worker died before replying to them: it started nothing for them)."""
        try:
            while True:
                line = await self._reader.readline()
                if not line:
                    break
                answer = json.loads(line)
                waiting = self._waiting.pop(answer["id"], None)
                if waiting is not None and not waiting.done():
                    waiting.set_result(answer)
        except (ConnectionError, OSError, ValueError):
            pass
        finally:
            self._writer.close()
            for waiting in self._waiting.values():
                if not waiting.done():
                    waiting.set_exception(ConnectionError())

    async def death(self) -> str:
        """How the worker ended (waits a moment for it to be reaped)."""
        with contextlib.suppress(TimeoutError):
            return await asyncio.wait_for(asyncio.shield(self.ended), _STOP_TIMEOUT)
        return "stopped answering"

    async def stop(self) -> None:
        """Close its socket (it exits at EOF; attempts it started keep running); kill if stuck."""
        self._close_offers()
        self._writer.close()
        with contextlib.suppress(ConnectionError, OSError):
            await self._writer.wait_closed()
        if self._replies is not None:
            await self._replies
        try:
            await asyncio.wait_for(asyncio.shield(self._monitor), _STOP_TIMEOUT)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                self.proc.kill()
            await self._monitor

    async def _watch(self) -> None:
        assert self.proc.stderr is not None
        stderr = await self.proc.stderr.read()
        code = await self.proc.wait()
        how = f"was killed by signal {_signal_name(-code)}" if code < 0 else f"exited with code {code}"
        text = stderr.decode(errors="replace").strip()
        if text:
            how += f": {text[-_STDERR_KEPT:]}"
        self._writer.close()
        self._close_offers()
        self.ended.set_result(how)


class Pool:
    """``size`` live workers of one interpreter; dead ones are replaced in the background."""

    def __init__(self, *, python: str, env: dict[str, str], size: int) -> None:
        self.python = python
        self._env = env
        self._size = max(1, size)
        self._workers: list[Worker] = []
        self._starting: set[asyncio.Task[Worker]] = set()
        self._closed = False

    def pids(self) -> list[int]:
        return [w.pid for w in self._workers if w.alive]

    async def fork(self, request: dict[str, Any], *, on_retry: Callable[[str], None]) -> Forked:
        last = ""
        for _ in range(_RETRIES):
            forked = self.hand_over(request)
            if forked is not None:
                return forked
            worker = await self._pick()
            try:
                return await worker.fork(request)
            except WorkerDiedError as exc:
                last = str(exc)
                log.warning("%s; starting a new one", last)
                self._drop(worker)
                on_retry(last)
        raise errors.ExecutorError(f"warm workers of {self.python} keep dying ({last}); "
                                   "run the stage with `executor: local` to see why")

    async def close(self) -> None:
        self._closed = True
        # Let workers being started finish (each stops itself, seeing the pool closed): a start
        # cancelled midway would leave an interpreter behind.
        await asyncio.gather(*list(self._starting), return_exceptions=True)
        workers, self._workers = self._workers, []
        await asyncio.gather(*(w.stop() for w in workers))

    @property
    def offers_spare(self) -> bool:
        return not self._closed and any(w.offers_spare for w in self._workers)

    def hand_over(self, request: dict[str, Any]) -> Forked | None:
        """The start on a spare a worker offered (``Worker.hand_over``), if one has; None
        (nothing started) else."""
        if self._closed:
            return None
        for worker in sorted((w for w in self._workers if w.offers_spare), key=lambda w: w.in_flight):
            forked = worker.hand_over(request)
            if forked is not None:
                return forked
        return None

    async def _pick(self) -> Worker:
        if self._closed:  # evicted (too many venvs) or the executor is closing
            raise errors.ExecutorError(f"the warm workers of {self.python} were stopped meanwhile")
        self._workers = [w for w in self._workers if w.alive]
        self._refill()
        if self._workers:  # the least busy (a fork takes ~1 ms)
            return min(self._workers, key=lambda w: w.in_flight)
        if not self._starting:
            self._refill(force=True)
        done, _ = await asyncio.wait(set(self._starting), return_when=asyncio.FIRST_COMPLETED)
        for task in done:
            if task.exception() is None:
                return task.result()
        raise errors.ExecutorError(f"no warm worker of {self.python} could start: "
                                   f"{next(iter(done)).exception()}")

    def _refill(self, *, force: bool = False) -> None:
        if self._closed:
            return
        missing = self._size - len(self._workers) - len(self._starting)
        for _ in range(max(missing, 1 if force else 0)):
            task = asyncio.get_running_loop().create_task(self._start_one())
            task.add_done_callback(_log_failure)
            self._starting.add(task)

    async def _start_one(self) -> Worker:
        try:
            worker = await Worker.start(python=self.python, env=self._env)
        finally:
            self._starting.discard(asyncio.current_task())  # type: ignore[arg-type,unused-ignore]
        if self._closed:
            await worker.stop()
            raise PoolClosed("the warm pool is closed")
        self._workers.append(worker)
        worker.ended.add_done_callback(lambda _f: self._on_end(worker))
        return worker

    def _on_end(self, worker: Worker) -> None:
        if self._closed or worker not in self._workers:
            return
        log.warning("warm worker %s (%s) %s; starting a new one", worker.pid, self.python,
                    worker.ended.result())
        self._drop(worker)

    def _drop(self, worker: Worker) -> None:
        if worker in self._workers:
            self._workers.remove(worker)
        self._refill()


class PoolClosed(errors.ExecutorError):
    """A worker came up after its pool closed (and was stopped): expected at shutdown, not a failure."""


def _log_failure(task: asyncio.Task[Worker]) -> None:
    if not task.cancelled() and task.exception() is not None and not isinstance(task.exception(), PoolClosed):
        log.warning("a warm worker did not start: %s", task.exception())


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"
