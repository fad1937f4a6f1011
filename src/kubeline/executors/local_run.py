"""One followed local attempt: wait for its exit, tail its output, enforce deadline and limits.

An ``Attempt`` is the in-memory side of a handle. It is the same whether this process started
the attempt or adopted it after a restart: the exit is learnt from a pidfd (readable when the
process ends, also for a process that is not our child), the status from ``WORK/rc``.

Between the exit and the result only what the result needs happens: kill the process group (and
cgroup), drain the output, read the status. The work dir stays where a restarted server looks
until the engine has stored the result and calls ``release``: then it moves out of the way (one
rename) and the rest, ``cleanup``, runs on the cleanup thread (``local_janitor``): hunting
processes that left the group (``local_limits.kill_marked``), deleting the work dir; the cgroups
are removed from the loop (a few ``rmdir`` on the cgroup filesystem, retried while killed
processes leave them).
``discard`` does the same from a bare handle (an attempt that ended while another server, or an
earlier life of this one, followed it).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import pathlib
import shutil
import signal
import time
from typing import Any

from kubeline.domain import quantities, states
from kubeline.executors import base, local_janitor, local_limits, local_stamps, local_tail, local_usage

_CLK_TCK = os.sysconf("SC_CLK_TCK")
_CGROUP_REMOVE_TRIES = 100  # x 50 ms: killed processes need a moment to leave the cgroup
_RECENT = 5.0  # seconds: pids handed out since a younger attempt started cannot have wrapped
TRASH_PREFIX = ".done-"


class Attempt:
    def __init__(self, *, handle: dict[str, Any], sink: base.LogSink, own_child: bool,
                 limit: int, kill_grace: float, poll_interval: float, memory_limit: int | None,
                 soft_memory: int | None, soft_cpu: float | None, limit_poll: float,
                 janitor: local_janitor.Janitor, alive: int | None = None,
                 fresh: bool = False, ended: int | None = None, punch: bool = False) -> None:
        self.handle = handle
        self.sink = sink
        self.work = pathlib.Path(handle["work_dir"])
        self.pid: int = handle["pid"]
        self.pgid: int = handle["pgid"]
        self.cgroups = local_limits.AttemptCgroups.from_json(handle.get("cgroups"))
        self._own_child = own_child
        self._grace = kill_grace
        self._poll = poll_interval
        self._memory_limit = memory_limit
        self._soft_memory = soft_memory
        self._soft_cpu = soft_cpu
        self._limit_poll = limit_poll
        self._janitor = janitor
        self._reason: tuple[states.FailureKind, str] | None = None
        self._status: int | None = None  # from waitpid, when the supervisor is our child
        self._noted: int | None = None  # the exit code a warm attempt sent as it ended (= its rc)
        self._detached = False
        self._cleaned = False
        self._reaped = False
        self._trash = self.work.with_name(TRASH_PREFIX + self.work.name)
        self._loop = asyncio.get_running_loop()
        self._alive = alive  # closed when the attempt ends or this server stops following it
        self._ended = ended  # a warm attempt writes its exit code here as it ends (see _watch_exit)
        fresh = fresh or own_child  # started just now (not adopted): nothing saved to load
        offsets = (0, 0) if fresh else _load_offsets(self.work)
        self._saved = offsets  # what ``offsets`` holds (a missing file reads as 0 0)
        # adopted: what the attempt wrote while no server followed it, stamped by its sampler
        stamps = local_stamps.Stamps() if fresh else local_stamps.Stamps.load(self.work)
        self._tails = [
            local_tail.StreamTail(path=self.work / "stdout", stream="stdout", offset=offsets[0],
                                  limit=limit, times=stamps.stdout, punch=punch),
            local_tail.StreamTail(path=self.work / "stderr", stream="stderr", offset=offsets[1],
                                  limit=limit, times=stamps.stderr, punch=punch),
        ]
        self.task: asyncio.Task[base.AttemptResult] = self._loop.create_task(self._run())

    def stop(self, kind: states.FailureKind, error: str, *, grace: float | None = None) -> None:
        """Kill the attempt's processes (TERM, then KILL after the grace period)."""
        if self._reason is not None or self.task.done():
            return
        self._reason = (kind, error)
        self._signal(signal.SIGTERM if (grace if grace is not None else self._grace) > 0
                     else signal.SIGKILL)
        self._loop.call_later(self._grace if grace is None else grace, self._signal,
                              signal.SIGKILL)

    def detach(self) -> None:
        self._detached = True
        self.task.cancel()

    async def _run(self) -> base.AttemptResult:
        exited: asyncio.Future[None] = self._loop.create_future()
        closer = self._watch_exit(exited)
        helpers = [self._loop.create_task(self._tail_loop())]
        if (self._memory_limit and self.cgroups.memory is None) or self._soft_memory \
                or self._soft_cpu:
            helpers.append(self._loop.create_task(self._limits_loop()))
        timer = None
        deadline = self.handle.get("deadline")
        if deadline:
            timer = self._loop.call_later(
                max(0.0, deadline - time.time()), self.stop, states.FailureKind.TIMEOUT,
                f"timed out after {self.handle['timeout']:g}s")
        try:
            await exited
        finally:
            closer()
            if timer is not None:
                timer.cancel()
            for helper in helpers:
                helper.cancel()
            for helper in helpers:
                with contextlib.suppress(asyncio.CancelledError):
                    await helper
            if self._detached:
                self._save_offsets()
                for tail in self._tails:
                    tail.close()
                self.sink.close()
                self._wake_sampler()
        return self._finish()

    def _wake_sampler(self) -> None:
        """No server follows the attempt any more (or it ended): let its sampler decide."""
        if self._alive is not None:
            with contextlib.suppress(OSError):
                os.close(self._alive)
            self._alive = None

    def release(self) -> None:
        """The result is stored: the work dir leaves where a restarted server would look at once
        (one rename), ``cleanup`` follows on the cleanup thread."""
        with contextlib.suppress(OSError):
            self.work.rename(self._trash)
        self._remove_cgroups(_CGROUP_REMOVE_TRIES)
        self._janitor.submit(self.cleanup, strays=self._strays_to_scan())

    def reap(self) -> None:
        """Kill strays outside the group and drop the cgroups (the files stay). Idempotent."""
        self._kill_strays()
        self._remove_cgroups(_CGROUP_REMOVE_TRIES)

    def cleanup(self) -> None:
        """After the result is stored (on the cleanup thread): kill strays, delete the files.
        Idempotent."""
        if self._cleaned:
            return
        self._cleaned = True
        self._kill_strays()
        shutil.rmtree(self._trash, ignore_errors=True)  # raw output may hold unmasked secrets
        shutil.rmtree(self.work, ignore_errors=True)  # when the rename failed

    def _kill_strays(self) -> None:
        """Processes of the attempt that left its group (found by their environment marker);
        with a cgroup, killing the cgroup found them. Once."""
        strays = self._strays_to_scan()
        if strays is not None:
            local_limits.kill_marked(strays[0], first_pid=strays[1])

    def _strays_to_scan(self) -> tuple[str, int | None] | None:
        """The attempt id and first pid ``kill_marked`` looks for its strays by (None: nothing
        to look for, or already looked for); from now on the caller's to scan."""
        if self._reaped:
            return None
        self._reaped = True
        if self.cgroups.memory is not None or self.cgroups.cpu is not None:
            return None
        recent = time.time() - self.handle.get("started_at", 0.0) < _RECENT
        return self.handle["attempt_id"], self.pid if recent else None

    def _finish(self) -> base.AttemptResult:
        self._signal(signal.SIGKILL)  # whatever the attempt left in its group (or cgroup)
        for tail in self._tails:
            tail.pump(self.sink, final=True)
            tail.close()
        self._save_offsets()  # adopted again (its result not stored yet): no line twice
        result = self._result()
        with contextlib.suppress(OSError):  # its supervisor wrote rc as the attempt ended
            result = dataclasses.replace(result, ended_at=(self.work / "rc").stat().st_mtime)
        self._wake_sampler()
        if result.failure is not None:
            self.sink.write("system", f"attempt {result.failure.value}: {result.error}")
        self.sink.close()
        return result

    def _result(self) -> base.AttemptResult:  # noqa: PLR0911 - one return per way to end
        rc = self._exit_code()
        if self._reason is not None:
            kind, error = self._reason
            return base.AttemptResult(exit_code=rc, failure=kind, error=error)
        if rc != 0 and self.cgroups.oom_killed():
            return base.AttemptResult(exit_code=rc, failure=states.FailureKind.OOM,
                                      error=self._oom_error())
        if rc is None:
            status = self._status
            if status is not None and os.WIFSIGNALED(status):
                return _signalled(None, os.WTERMSIG(status))
            return base.AttemptResult(exit_code=None, failure=states.FailureKind.LOST,
                                      error="ended without an exit status (the process that "
                                            "records it was killed)")
        if rc == 125:
            return base.AttemptResult(exit_code=rc, failure=states.FailureKind.START_FAILED,
                                      error="could not be placed in its cgroup")
        if rc > 128 and rc - 128 < signal.NSIG:
            return _signalled(rc, rc - 128)
        if rc != 0:
            return base.AttemptResult(exit_code=rc, failure=states.FailureKind.EXIT_CODE,
                                      error=f"exited with code {rc}")
        return self._outputs()

    def _exit_code(self) -> int | None:
        """``rc``; for a warm attempt killed by a signal, whose worker writes ``rc`` a moment after
        the end (before it reaps the process), the status of the zombie meanwhile, as sh reports
        it; None when the attempt ended without one (LOST). A warm attempt that sent its code as it
        ended wrote that code to ``rc`` just before (and nothing replaces it: ``warm_worker``)."""
        if self._noted is not None:
            return self._noted
        rc = _read_rc(self.work / "rc")
        if rc is not None or self._status is not None:
            return rc
        status = local_limits.exit_status(self.pid, started=self.handle.get("proc_start"))
        if status is None:  # reaped: its worker (if alive) wrote rc first
            return _read_rc(self.work / "rc")
        return 128 + os.WTERMSIG(status) if os.WIFSIGNALED(status) else None

    def _outputs(self) -> base.AttemptResult:
        return base.collected_result(self.work)

    def _oom_error(self) -> str:
        return f"exceeded its memory limit of {self.handle.get('memory_limit')}"

    def _signal(self, sig: int) -> None:
        started = local_limits.start_ticks(self.pid)
        if started is None or started == self.handle.get("proc_start"):  # else its pid, and so
            local_limits.kill_group(self.pgid, sig)  # its group id, belongs to a new process now
        self.cgroups.signal_all(sig)

    def _watch_exit(self, exited: asyncio.Future[None]) -> Any:
        """Resolve ``exited`` when the handle's process (the supervisor, or a warm attempt's own
        process) ends, or when the attempt process a warm supervisor of an earlier version
        names ended having written its ``rc``; returns a function that stops watching."""
        started = self.handle.get("proc_start")
        noted, self._ended = self._ended, None
        try:
            fd = os.pidfd_open(self.pid)
        except ProcessLookupError:
            exited.set_result(None)
            fd = None
        except OSError:  # no pidfd (old kernel): poll
            poller = self._loop.create_task(self._poll_exit(exited))
            return _closing(noted, poller.cancel)
        if fd is not None and not local_limits.is_running(self.pid, started=started) \
                and not self._own_child:
            os.close(fd)
            exited.set_result(None)
            fd = None
        if fd is None:
            return _closing(noted, lambda: None)
        watched = [fd]

        def ready() -> None:
            self._loop.remove_reader(fd)
            self._reap()
            if not exited.done():
                exited.set_result(None)

        def attempt_ended(attempt_fd: int) -> None:
            self._loop.remove_reader(attempt_fd)
            if _read_rc(self.work / "rc") is not None and not exited.done():
                exited.set_result(None)  # else killed: its supervisor writes rc and ends

        def close() -> None:
            for each in watched:
                self._loop.remove_reader(each)
                os.close(each)

        self._loop.add_reader(fd, ready)
        if noted is not None:
            os.set_blocking(noted, False)
            watched.append(noted)
            self._loop.add_reader(noted, self._on_note, noted, exited)
        attempt_fd = self._attempt_pidfd()
        if attempt_fd is not None:
            watched.append(attempt_fd)
            self._loop.add_reader(attempt_fd, attempt_ended, attempt_fd)
        return close

    def _on_note(self, noted: int, exited: asyncio.Future[None]) -> None:
        """The attempt wrote its rc and says so as it ends: its result is there, without
        waiting for the teardown of its memory (a forked interpreter's: ~1 ms)."""
        try:
            data = os.read(noted, 64)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        code = _parse_rc(data)
        if code is not None:
            self._noted = code  # the attempt wrote it to rc before it sent it: no file read
            if not exited.done():
                exited.set_result(None)
        elif not data:  # closed without a note (killed): the pidfd tells the end
            self._loop.remove_reader(noted)

    def _attempt_pidfd(self) -> int | None:
        """A pidfd of the warm attempt's own process, when the handle names one besides its
        supervisor (attempts of an earlier version) and it is the one."""
        pid, started = self.handle.get("attempt_pid"), self.handle.get("attempt_start")
        if not pid or started is None or pid == self.pid:
            return None
        try:
            fd = os.pidfd_open(pid)
        except OSError:
            return None
        if local_limits.start_ticks(pid) != started:  # gone (its pid reused): the supervisor says
            os.close(fd)
            return None
        return fd

    async def _poll_exit(self, exited: asyncio.Future[None]) -> None:
        while local_limits.is_running(  # noqa: ASYNC110 - no event exists for another's exit
                self.pid, started=self.handle.get("proc_start")):
            await asyncio.sleep(self._poll)
        self._reap()
        exited.set_result(None)

    def _reap(self) -> None:
        if not self._own_child:
            return
        with contextlib.suppress(ChildProcessError):
            pid, status, usage = os.wait4(self.pid, os.WNOHANG)
            if pid:
                self._status = status
                local_usage.record(self.handle, usage)

    async def _tail_loop(self) -> None:
        while True:
            read = sum(tail.pump(self.sink) for tail in self._tails)
            if read:
                self._save_offsets()
                await asyncio.sleep(0)
            else:
                await asyncio.sleep(self._poll)

    async def _limits_loop(self) -> None:
        warned_memory = warned_cpu = False
        last_ticks, last_time = None, time.monotonic()
        while True:
            pids = self.cgroups.pids() or set(local_limits.group_pids(self.pgid))
            usage = self.cgroups.memory_usage()
            if usage is None:
                usage = local_limits.rss_bytes(pids)
            if self._memory_limit and self.cgroups.memory is None and usage > self._memory_limit:
                self.stop(states.FailureKind.OOM, self._oom_error(), grace=0)
            if self._soft_memory and usage > self._soft_memory and not warned_memory:
                warned_memory = True
                self.sink.write("system", f"warning: memory use {quantities.format_bytes(usage)}"
                                f" is above the soft limit {self.handle.get('soft_memory')}")
            if self._soft_cpu:
                ticks, now = local_limits.cpu_ticks(pids), time.monotonic()
                if last_ticks is not None and now > last_time and not warned_cpu:
                    cores = (ticks - last_ticks) / _CLK_TCK / (now - last_time)
                    if cores > self._soft_cpu * 1.05:
                        warned_cpu = True
                        self.sink.write("system", f"warning: CPU use {cores:.2f} cores is above "
                                        f"the soft limit {self.handle.get('soft_cpu')}")
                last_ticks, last_time = ticks, now
            await asyncio.sleep(self._limit_poll)

    def _save_offsets(self) -> None:
        """Where the tails are, for a server that adopts the attempt (no line twice); written
        only when they moved (two file operations less per attempt with no output)."""
        offsets = (self._tails[0].offset, self._tails[1].offset)
        if offsets == self._saved:
            return
        temp = self.work / "offsets.tmp"
        with contextlib.suppress(OSError):
            temp.write_text(f"{offsets[0]} {offsets[1]}")
            temp.replace(self.work / "offsets")
            self._saved = offsets

    def _remove_cgroups(self, tries: int) -> None:
        if not self.cgroups.remove() and tries > 0:
            self.cgroups.signal_all(signal.SIGKILL)
            with contextlib.suppress(RuntimeError):  # the loop is closing: leave it to the OS
                self._loop.call_later(0.05, self._remove_cgroups, tries - 1)


def _signalled(rc: int | None, number: int) -> base.AttemptResult:
    try:
        name = signal.Signals(number).name
    except ValueError:
        name = f"signal {number}"
    return base.AttemptResult(exit_code=rc, failure=states.FailureKind.EXIT_CODE,
                              error=f"killed by signal {name}")


def discard(handle: dict[str, Any]) -> None:
    """``cleanup`` of an attempt this process does not follow, from its handle alone."""
    work = pathlib.Path(handle["work_dir"])
    trash = work.with_name(TRASH_PREFIX + work.name)
    with contextlib.suppress(OSError):
        work.rename(trash)
    local_limits.kill_marked(handle["attempt_id"])
    cgroups = local_limits.AttemptCgroups.from_json(handle.get("cgroups"))
    cgroups.signal_all(signal.SIGKILL)
    cgroups.remove()
    shutil.rmtree(trash, ignore_errors=True)


def read_int(path: pathlib.Path) -> int | None:
    """The integer a file holds, or None (missing, not yet written whole)."""
    try:
        text = path.read_text()
    except OSError:
        return None
    return int(text) if text.endswith("\n") and text.strip().isdigit() else None


def _read_rc(path: pathlib.Path) -> int | None:
    try:
        with open(path, "rb") as file:  # noqa: PTH123 - read once per attempt end, on the loop
            data = file.read()
    except OSError:
        return None
    return _parse_rc(data)


def _parse_rc(data: bytes) -> int | None:
    """An exit code as ``rc`` (and a warm attempt's note) hold it: digits and a newline."""
    text = data.decode("ascii", "replace")
    return int(text) if text.endswith("\n") and text.strip().lstrip("-").isdigit() else None


def _closing(fd: int | None, then: Any) -> Any:
    """A watcher's stop function that also closes ``fd`` (when one is given)."""
    if fd is None:
        return then

    def close() -> None:
        os.close(fd)
        then()

    return close


def _load_offsets(work: pathlib.Path) -> tuple[int, int]:
    with contextlib.suppress(OSError, ValueError):
        out, err = (work / "offsets").read_text().split()
        return int(out), int(err)
    return 0, 0

