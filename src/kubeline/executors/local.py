"""The local executor: one OS process per attempt, adoptable after a restart.

Each attempt runs under a tiny ``/bin/sh`` supervisor started with ``posix_spawn`` in a new
session (so the attempt is its own process group)::

    sh -c 'join cgroups; cd FOLDER; "$@" >WORK/stdout 2>WORK/stderr; echo $? >WORK/rc' ...

While no server follows the attempt, a sampler stamps its output: the supervisor forks a
subshell that blocks reading a pipe whose other end only the server holds. When the server dies
(or stops) the read ends and the subshell becomes ``local_stamps``' sampler, which appends the
output files' sizes with the time to ``WORK/times`` while they grow; a server that adopts the
attempt gives the lines written meanwhile those times instead of its own (the attempt's real
times), and its end time is the mtime of ``WORK/rc``. While the server follows, the pipe costs one
fork and nothing else.

Nothing of the attempt depends on Kubeline staying alive: output goes to files in a private
work dir (mode 0700), and the exit status lands in ``WORK/rc``. The work dir stays until the
engine has stored the result and ``release``s it (then it is removed: the raw output may hold
unmasked secrets): a server killed between the attempt's end and that write leaves the status
and outputs for the next one to adopt. Before spawning, the work dir gets ``handle.json`` (the
handle but the pid) and the supervisor's first act is writing its pid to ``WORK/pid``, so a
server killed between ``start`` and storing the handle leaves an attempt the next one ``find``s
(instead of starting the stage again); ``leftovers`` lists what nobody will release.

This executor tails the files into the ``LogSink`` and learns about the exit from a pidfd (no
thread, no polling); a restarted server ``adopt``s the attempt from its handle (pid + start
time, work dir, deadline) and resumes tailing from the offsets saved in the work dir. Per
attempt this costs one ``sh`` exec, a few small file writes and (when cgroups are usable) two
cgroup mkdirs: a few milliseconds.

The supervisor traps SIGTERM so that a killed attempt still records its status. When the
attempt ends, whatever it left behind is killed: its process group, and with a cgroup every
process in it (also daemons that called ``setsid``); see ``local_limits`` for how leftovers of
attempts without a cgroup are found.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import pathlib
import re
import shutil
import signal
import sys
import time
from typing import Any

from kubeline.domain import errors, quantities, states
from kubeline.executors import (
    base,
    local_env,
    local_janitor,
    local_limits,
    local_run,
    local_stamps,
    local_usage,
    local_venvs,
    local_workdir,
)

_WRAPPER = (
    'w=$1; d=$2; m=$3; c=$4; py=$5; stamp=$6; shift 6; '
    'echo $$ >"$w/pid"; '
    '[ -z "$py" ] || ( read _ <&3; [ -e "$w/rc" ] || exec "$py" -S -I -c "$stamp" "$w" ) & '
    'exec 3<&-; '
    'for p in "$m" "$c"; do [ -z "$p" ] || echo $$ >"$p" || exit 125; done; '
    'cd "$d" || exit 126; '
    'trap : TERM INT; '
    '"$@" </dev/null >"$w/stdout" 2>"$w/stderr"; '
    'echo $? >"$w/rc"'
)
_SAFE = re.compile(r"[^A-Za-z0-9_.-]")
_LIMIT_POLL = 0.1  # seconds between memory checks when no cgroup enforces the limit
_RECHECK = 5.0  # seconds an executable found runnable is not checked again
HANDLE = "handle.json"


class LocalExecutor:
    name = "local"

    def __init__(self, *, work_dir: pathlib.Path, artifacts_dir: pathlib.Path,
                 venvs: local_venvs.VenvCache, log_line_limit: int = 64 * 1024,
                 kill_grace: float = 5.0, poll_interval: float = 0.05,
                 use_cgroups: bool = True, env_passthrough: tuple[str, ...] = ()) -> None:
        self.work_dir = work_dir
        self.punch = local_workdir.on_tmpfs(work_dir)  # output read into the log store leaves memory
        self.env_passthrough = env_passthrough  # server variables stages may see: local_env
        self.artifacts_dir = artifacts_dir
        self.venvs = venvs
        self.log_line_limit = log_line_limit
        self.kill_grace = kill_grace
        self.poll_interval = poll_interval
        self.cgroups = (local_limits.CgroupRoots.probe() if use_cgroups
                        else local_limits.CgroupRoots())
        self.capabilities = base.Capabilities(adopt=True, memory_limit=True, resource_metrics=True,
                                              cpu_limit=self.cgroups.cpu is not None, recoverable=True)
        self._attempts: dict[str, local_run.Attempt] = {}
        self._alive: dict[str, int] = {}  # attempt id -> the pipe end that keeps its sampler asleep
        self._ended: dict[str, local_run.Attempt] = {}  # results handed out, not yet released
        self.janitor = local_janitor.Janitor()  # deletes what released attempts leave
        self._runnable_at: dict[str, float] = {}  # program -> when it was last found executable
        self._base_env: dict[pathlib.Path | None, dict[str, str]] = {}  # venv -> see _base_environment
        work_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        for trash in work_dir.glob(f"{local_run.TRASH_PREFIX}*"):  # a server died before cleanup
            shutil.rmtree(trash, ignore_errors=True)

    @classmethod
    def from_settings(cls, settings: Any, **kwargs: Any) -> LocalExecutor:
        """Paths and limits from ``kubeline.settings.Settings``."""
        venvs = local_venvs.VenvCache(settings.venvs_dir, uv_cache_dir=settings.uv_cache_dir
                                      or settings.home / "uv-cache")
        work_dir = settings.work_dir or local_workdir.default_work_dir(settings.home)
        return cls(work_dir=work_dir, artifacts_dir=settings.home / "artifacts",
                   venvs=venvs, log_line_limit=settings.log_line_limit,
                   env_passthrough=tuple(settings.stage_env_passthrough), **kwargs)

    async def start(self, spec: base.AttemptSpec, sink: base.LogSink) -> dict[str, Any]:
        argv, venv = await self._resolve_argv(spec)
        handle = self._spawn(spec, argv=argv, venv=venv)
        self._supervise(handle, sink, own_child=True, alive=self._alive.pop(spec.attempt_id, None))
        return handle

    def _spawn(self, spec: base.AttemptSpec, *, argv: list[str],
               venv: pathlib.Path | None) -> dict[str, Any]:
        """Prepare the work dir and cgroups and spawn the supervisor (synchronous: ~1 ms)."""
        work = self.work_dir / _SAFE.sub("_", spec.attempt_id)
        if spec.folder is not None and not spec.folder.is_dir():
            raise errors.ExecutorError(f"pipeline folder {spec.folder} does not exist")
        try:
            work.mkdir(mode=0o700)
        except FileExistsError:  # left by a start that crashed before handing out a handle
            shutil.rmtree(work)
            work.mkdir(mode=0o700)
        artifacts = (self.artifacts_dir / _SAFE.sub("_", spec.run_id)
                     / _SAFE.sub("_", spec.stage_id) / str(spec.number))
        artifacts.mkdir(parents=True, exist_ok=True)
        cwd = spec.folder or work / "tmp"
        if spec.folder is None:
            cwd.mkdir()
        env = self._environment(spec, work=work, artifacts=artifacts, venv=venv)
        limits = spec.resources.limits
        cgroups = local_limits.AttemptCgroups.create(
            self.cgroups, name=f"attempt-{work.name}", memory_bytes=limits.memory_bytes,
            cpu_cores=limits.cpu_cores)
        join_memory, join_cpu = cgroups.join_files()
        now = time.time()
        handle: dict[str, Any] = {
            "attempt_id": spec.attempt_id, "pid": None, "pgid": None, "proc_start": None,
            "work_dir": str(work), "artifacts_dir": str(artifacts), "started_at": now,
            "timeout": spec.timeout, "deadline": now + spec.timeout if spec.timeout else None,
            "memory_limit": limits.memory, "cpu_limit": limits.cpu,
            "soft_memory": spec.resources.soft_limits.memory,
            "soft_cpu": spec.resources.soft_limits.cpu, "cgroups": cgroups.to_json(),
        }
        watched, alive = os.pipe()  # ``alive`` stays here: its end starts the sampler (see above)
        try:
            _write_new(work / "inputs.json", json.dumps(spec.inputs))
            _write_new(work / "config.json", json.dumps(spec.config))
            _write_new(work / HANDLE, json.dumps(handle))  # the intent: see ``find``
            pid = os.posix_spawn(
                "/bin/sh",
                ["/bin/sh", "-c", _WRAPPER, "kubeline-attempt", str(work), str(cwd),
                 join_memory, join_cpu, sys.executable or "", local_stamps.SAMPLER, *argv],
                env, setsid=True, file_actions=[
                    (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
                    (os.POSIX_SPAWN_OPEN, 1, os.devnull, os.O_WRONLY, 0),
                    (os.POSIX_SPAWN_OPEN, 2, os.devnull, os.O_WRONLY, 0),
                    (os.POSIX_SPAWN_DUP2, watched, 3)])
        except (OSError, TypeError, ValueError) as exc:
            os.close(alive)
            cgroups.remove()
            shutil.rmtree(work, ignore_errors=True)
            raise errors.ExecutorError(f"cannot start {argv[0]}: {exc}") from exc
        finally:
            os.close(watched)
        self._alive[spec.attempt_id] = alive
        return {**handle, "pid": pid, "pgid": pid, "proc_start": local_limits.start_ticks(pid)}

    async def wait(self, handle: dict[str, Any]) -> base.AttemptResult:
        attempt = self._attempts.get(handle["attempt_id"])
        if attempt is None:
            raise errors.ExecutorError(
                f"attempt {handle['attempt_id']} is not followed by this executor; adopt it first"
            )
        result = await asyncio.shield(attempt.task)
        if self._attempts.get(handle["attempt_id"]) is attempt:
            del self._attempts[handle["attempt_id"]]
            self._ended[handle["attempt_id"]] = attempt  # its files stay until ``release``
        return result

    async def release(self, handle: dict[str, Any]) -> None:
        """The result is stored: the work dir goes out of the way at once (one rename), the rest
        of the cleanup (strays, files) follows on the cleanup thread."""
        attempt = self._ended.pop(handle["attempt_id"], None)
        if attempt is not None:
            attempt.release()
        elif handle["attempt_id"] not in self._attempts:  # ended while another server followed it
            await asyncio.to_thread(local_run.discard, handle)

    async def find(self, attempt_id: str) -> dict[str, Any] | None:
        if attempt_id in self._attempts:
            return self._attempts[attempt_id].handle
        return await asyncio.to_thread(_found, self.work_dir / _SAFE.sub("_", attempt_id),
                                       attempt_id=attempt_id)

    def leftovers(self) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = []
        followed = {_SAFE.sub("_", key) for key in (*self._attempts, *self._ended)}
        with contextlib.suppress(OSError):
            for entry in os.scandir(self.work_dir):
                if entry.name.startswith(local_run.TRASH_PREFIX) or entry.name in followed:
                    continue
                handle = _found(pathlib.Path(entry.path), attempt_id=None)
                if handle is None:  # a start that died before its supervisor ran (or one this
                    # moment old, in another process: the store does not hold it as final)
                    found.append({"attempt_id": entry.name, "work_dir": entry.path})
                elif not local_limits.is_running(handle["pid"], started=handle["proc_start"]):
                    found.append(handle)
        return found

    async def resource_usage(self, handle: dict[str, Any], *, running: bool) -> dict[str, Any]:
        """The API's ``resources``: memory and CPU time so far while it runs (``/proc``), peak
        memory and CPU time once it ended (``local_usage``)."""
        attempt = self._attempts.get(handle["attempt_id"]) if running else None
        live = None
        if attempt is not None:
            pids = attempt.cgroups.pids() or set(local_limits.group_pids(attempt.pgid))
            live = (local_limits.rss_bytes(pids), local_limits.cpu_ticks(pids))
        return await asyncio.to_thread(local_usage.report, handle, live=live)

    async def cancel(self, handle: dict[str, Any]) -> None:
        attempt = self._attempts.get(handle["attempt_id"])
        if attempt is not None:
            attempt.stop(states.FailureKind.CANCELLED, "was cancelled")
            return
        if local_limits.is_running(handle["pid"], started=handle.get("proc_start")):
            local_limits.kill_group(handle["pgid"], signal.SIGKILL)  # not ours: no grace needed
            local_limits.AttemptCgroups.from_json(handle.get("cgroups")).signal_all(
                signal.SIGKILL)

    async def adopt(self, handle: dict[str, Any], sink: base.LogSink) -> bool:
        if handle["attempt_id"] in self._attempts:
            return True
        if not _adoptable(handle):
            return False
        self._ended.pop(handle["attempt_id"], None)  # its result was not stored: collected again
        self._supervise(handle, sink, own_child=False)
        return True

    async def close(self) -> None:
        """Stop following attempts but leave them running, and the results of ended ones whose
        release did not come: a restarted server adopts them."""
        attempts = list(self._attempts.values())
        self._attempts.clear()
        for attempt in attempts:
            attempt.detach()
        for attempt in attempts:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await attempt.task
        for attempt in [*attempts, *self._ended.values()]:
            if attempt.task.done() and not attempt.task.cancelled():
                attempt.reap()  # ended: what it left running dies now, its files stay
        self._ended.clear()
        await self.janitor.settle()
        self.janitor.close()
        with contextlib.suppress(OSError):  # empty: no litter of this home left in a tmpfs
            self.work_dir.rmdir()

    def _supervise(self, handle: dict[str, Any], sink: base.LogSink, *, own_child: bool,
                   alive: int | None = None, fresh: bool = False, ended: int | None = None) -> None:
        soft_cpu, soft_memory = handle.get("soft_cpu"), handle.get("soft_memory")
        attempt = local_run.Attempt(
            handle=handle, sink=sink, own_child=own_child, limit=self.log_line_limit,
            kill_grace=self.kill_grace, poll_interval=self.poll_interval,
            memory_limit=quantities.memory_bytes(handle["memory_limit"])
            if handle.get("memory_limit") else None,
            soft_memory=quantities.memory_bytes(soft_memory) if soft_memory else None,
            soft_cpu=quantities.cpu_cores(soft_cpu) if soft_cpu else None,
            limit_poll=_LIMIT_POLL, janitor=self.janitor, alive=alive, fresh=fresh, ended=ended,
            punch=self.punch)
        self._attempts[handle["attempt_id"]] = attempt  # until ``wait`` collects the result

    async def _resolve_argv(self, spec: base.AttemptSpec) -> tuple[list[str], pathlib.Path | None]:
        if not spec.argv:
            raise errors.ExecutorError(f"stage {spec.stage_id}: nothing to run (empty argv)")
        venv = None
        argv = list(spec.argv)
        if spec.runtime is base.Runtime.KUBELINE:
            if argv[0] == "python":
                argv[0] = sys.executable
        else:
            venv = await self.venvs.ensure(spec.python_version, spec.requirements,
                                           spec.extra_packages)
            if argv[0] == "python":
                argv[0] = str(venv / "bin" / "python")
        program = argv[0]
        path = f"{venv / 'bin'}:{os.environ.get('PATH', '')}" if venv else os.environ.get("PATH")
        if os.sep in program:
            if not self._runnable(program):
                raise errors.ExecutorError(f"stage {spec.stage_id}: cannot run {program}: "
                                           "no such executable (is the venv broken?)")
        elif shutil.which(program, path=path) is None:
            raise errors.ExecutorError(f"stage {spec.stage_id}: {program!r} is not installed "
                                       "or not on PATH")
        return argv, venv

    def _runnable(self, program: str) -> bool:
        """``os.access(program, X_OK)``, trusted for a few seconds once true (the venv's python
        of every attempt: a path lookup on the loop per attempt otherwise); a start that fails
        anyway says so too."""
        now = time.monotonic()
        if now - self._runnable_at.get(program, -_RECHECK) < _RECHECK:
            return True
        if not os.access(program, os.X_OK):
            self._runnable_at.pop(program, None)
            return False
        self._runnable_at[program] = now
        return True

    def _base_environment(self, *, venv: pathlib.Path | None = None) -> dict[str, str]:
        """An allow-list of the server's variables, never its secrets (``local_env``), read once
        per venv: the server's environment does not change while it runs (the warm workers start
        from it too), and filtering ``os.environ`` per attempt was ~10% of the loop's CPU for a
        small stage. A copy: the caller adds to it."""
        found = self._base_env.get(venv)
        if found is None:
            found = self._base_env[venv] = local_env.base(passthrough=self.env_passthrough, venv=venv)
        return dict(found)

    def _environment(self, spec: base.AttemptSpec, *, work: pathlib.Path,
                     artifacts: pathlib.Path, venv: pathlib.Path | None) -> dict[str, str]:
        env = self._base_environment(venv=venv)
        env.update({
            "KUBELINE_INPUTS": str(work / "inputs.json"),
            "KUBELINE_CONFIG": str(work / "config.json"),
            "KUBELINE_OUTPUTS": str(work / "outputs.json"),
            "KUBELINE_ROUTE_FILE": str(work / "route"),
            "KUBELINE_ARTIFACTS_DIR": str(artifacts),
            "KUBELINE_RUN_ID": spec.run_id,
            "KUBELINE_PIPELINE": spec.pipeline,
            "KUBELINE_STAGE": spec.stage_id,
            "KUBELINE_ATTEMPT": str(spec.number),
            "KUBELINE_ATTEMPT_ID": spec.attempt_id,  # finds its leftovers: local_limits
        })
        env.update(spec.env)
        return env


def _write_new(path: pathlib.Path, text: str) -> None:
    """``path.write_text`` without the text-file layers (this is on every attempt's start path)."""
    data = memoryview(text.encode())
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o666)
    try:
        while data:
            data = data[os.write(fd, data):]
    finally:
        os.close(fd)


def _found(work: pathlib.Path, *, attempt_id: str | None) -> dict[str, Any] | None:
    """The handle of the attempt in ``work`` from its intent and the pid its supervisor wrote
    (or, in the moment before it did, the session leader marked with ``attempt_id``); None when
    it never started."""
    try:
        handle: dict[str, Any] = json.loads((work / HANDLE).read_text())
    except (OSError, ValueError):
        return None
    if handle.get("pid") is not None:
        return handle
    pid = local_run.read_int(work / "pid")
    if pid is None and attempt_id is not None:
        pid = local_limits.marked_leader(attempt_id)
    if pid is None:
        return None
    # A live process is ours only if it carries the marker (else its pid was reused): a
    # start time that matches no process makes it count as ended.
    ours = local_limits.is_marked(pid, handle["attempt_id"])
    started = local_limits.start_ticks(pid) if ours else None
    return {**handle, "pid": pid, "pgid": pid, "proc_start": -1 if started is None else started}


def _adoptable(handle: dict[str, Any]) -> bool:
    """The work dir is there and the attempt still runs or has recorded its exit status."""
    work = pathlib.Path(handle["work_dir"])
    finished = (work / "rc").is_file()
    alive = local_limits.is_running(handle["pid"], started=handle.get("proc_start"))
    return work.is_dir() and (alive or finished)

