"""The ``local-warm`` executor: small python stages forked from a warm interpreter of their venv.

Starting ``python`` costs ~12 ms here, most of a tiny stage. This executor keeps a few
``warm_worker`` interpreters per venv (``warm_pool``) and has one fork a supervised process per
attempt, which then looks exactly like an attempt of the local executor: its own session and
process group, cwd = the pipeline folder, the attempt's environment, stdout/stderr in files of
a private work dir, its exit status in ``WORK/rc``, cgroups for limits. So everything after the
start is the local executor's code (it is a subclass): tailing into the ``LogSink``, pidfd exit
detection, timeout/cancel killing the group, OOM detection, masking, cleanup and adoption after
a restart, with the same messages. Isolation stays per process: the worker never runs user code
and every attempt is a fresh fork.

What gets a warm start: ``python`` stages running a script (``python [-u] FILE ARGS``) in the
pipeline's venv with no requirements of their own. Anything else (notebooks, shell, built-in
components, stages with requirements, env that changes how Python starts, e.g.
``PYTHONHASHSEED`` or ``PYTHONWARNINGS``) is started by the local executor's own path. Known
differences from a fresh interpreter: attempts forked from one worker share its hash seed, and
a process that leaves the group without exec-ing (fork + ``setsid``, no cgroup) is not found by
the environment marker of ``local_limits.kill_marked`` (its ``/proc/PID/environ`` is the
worker's).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import os
import pathlib
import time
from typing import Any

from kubeline.domain import errors
from kubeline.executors import base, local, local_limits, warm_pool

# Read by Python after startup, or emulated by the worker; any other PYTHON* variable that
# differs from the worker's own environment means a fresh interpreter.
_EMULATED_ENV = frozenset({"PYTHONPATH", "PYTHONDONTWRITEBYTECODE", "PYTHONUNBUFFERED"})


class WarmExecutor(local.LocalExecutor):
    name = "local-warm"

    def __init__(self, *, workers_per_venv: int = 2, max_venvs: int = 8, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.workers_per_venv = workers_per_venv
        self.max_venvs = max_venvs
        self._pools: collections.OrderedDict[str, warm_pool.Pool] = collections.OrderedDict()
        self._closing: set[asyncio.Task[None]] = set()

    @classmethod
    def from_settings(cls, settings: Any, **kwargs: Any) -> WarmExecutor:
        executor = super().from_settings(settings, **kwargs)
        assert isinstance(executor, WarmExecutor)
        return executor

    def warm_argv(self, spec: base.AttemptSpec) -> list[str] | None:
        """``[script, *args]`` when the attempt can start warm, else None (a cold start)."""
        if (spec.runtime is not base.Runtime.PIPELINE or spec.stage_type != "python"
                or spec.requirements is not None or spec.extra_packages):
            return None
        argv = list(spec.argv)
        if len(argv) < 2 or argv[0] != "python":
            return None
        rest = argv[1:]
        while rest and rest[0] == "-u":
            rest = rest[1:]
        if not rest or rest[0].startswith("-"):
            return None
        startup = {key: value for key, value in spec.env.items()
                   if key.startswith("PYTHON") and key not in _EMULATED_ENV}
        if startup:
            worker_env = self._base_environment()
            if any(worker_env.get(key) != value for key, value in startup.items()):
                return None
        return rest

    def worker_pids(self) -> dict[str, list[int]]:
        """Live warm workers by interpreter (for diagnostics and tests)."""
        return {python: pool.pids() for python, pool in self._pools.items()}

    async def start(self, spec: base.AttemptSpec, sink: base.LogSink) -> dict[str, Any]:
        script_argv = self.warm_argv(spec)
        if script_argv is None:
            return await super().start(spec, sink)
        argv, venv = await self._resolve_argv(spec)
        assert venv is not None
        forked = await self._fork(spec, python=argv[0], script_argv=script_argv, venv=venv,
                                  sink=sink)
        self._supervise(forked.handle, sink, own_child=False, fresh=True, ended=forked.ended)
        return forked.handle

    async def close(self) -> None:
        """Stop the workers and stop following attempts (they keep running, adoptable)."""
        pools, self._pools = list(self._pools.values()), collections.OrderedDict()
        for pool in pools:
            await pool.close()
        await asyncio.gather(*self._closing)
        await super().close()

    async def start_held(self, spec: base.AttemptSpec, sink: base.LogSink) -> base.Held | None:
        """The attempt on a spare a worker offered, prepared up to its script (work dir, files,
        environment, the script read and compiled), which it runs only on ``go``: that
        preparation overlaps the transaction that records the attempt. None (nothing started)
        when the stage does not start warm, its venv is not built yet, or no spare is offered."""
        script_argv = self.warm_argv(spec)
        venv = None if script_argv is None else self.venvs.ready(
            spec.python_version, spec.requirements, spec.extra_packages)
        if script_argv is None or venv is None:
            return None
        python = str(venv / "bin" / "python")
        pool = self._pools.get(python)
        if pool is None or not pool.offers_spare or not self._runnable(python):
            return None
        request, cgroups = self._request(spec, script_argv=script_argv, venv=venv)
        forked = pool.hand_over({**request, "hold": True})
        if forked is None or forked.ended is None:
            cgroups.remove()
            return None
        ended = forked.ended

        def go() -> None:
            with contextlib.suppress(OSError):  # the spare is gone: the attempt ends LOST
                os.write(ended, b"go\n")
            self._supervise(forked.handle, sink, own_child=False, fresh=True, ended=ended)

        def abort() -> None:
            os.close(ended)  # the spare reads EOF: it removes its work dir and ends
            cgroups.remove()

        self._pools.move_to_end(python)
        return base.Held(handle=forked.handle, go=go, abort=abort)

    def _request(self, spec: base.AttemptSpec, *, script_argv: list[str],
                 venv: pathlib.Path) -> tuple[dict[str, Any], local_limits.AttemptCgroups]:
        """The request a warm worker (or its offered spare) starts the attempt from, and the
        attempt's cgroups (made here: the caller removes them when nothing starts).

        The loop touches no file here: the worker makes the work dir and writes the handle
        (what ``find`` reads after a restart) before it replies, and the attempt process writes
        its inputs and config and makes its artifacts dir before it runs the script. On a busy
        journaling filesystem those few creates were 2-6 ms of the loop per attempt."""
        work = self.work_dir / local._SAFE.sub("_", spec.attempt_id)
        artifacts = (self.artifacts_dir / local._SAFE.sub("_", spec.run_id)
                     / local._SAFE.sub("_", spec.stage_id) / str(spec.number))
        cwd = spec.folder or work / "tmp"
        env = self._environment(spec, work=work, artifacts=artifacts, venv=venv)
        limits = spec.resources.limits
        cgroups = local_limits.AttemptCgroups.create(
            self.cgroups, name=f"attempt-{work.name}", memory_bytes=limits.memory_bytes,
            cpu_cores=limits.cpu_cores)
        now = time.time()
        intent: dict[str, Any] = {
            "attempt_id": spec.attempt_id, "pid": None, "pgid": None, "proc_start": None,
            "work_dir": str(work), "artifacts_dir": str(artifacts), "started_at": now,
            "timeout": spec.timeout, "deadline": now + spec.timeout if spec.timeout else None,
            "memory_limit": limits.memory, "cpu_limit": limits.cpu,
            "soft_memory": spec.resources.soft_limits.memory,
            "soft_cpu": spec.resources.soft_limits.cpu, "cgroups": cgroups.to_json(),
        }
        request = {"work": str(work), "cwd": str(cwd), "argv": script_argv, "env": env,
                   "cgroups": [path for path in cgroups.join_files() if path], "handle": intent,
                   "folder": None if spec.folder is None else str(spec.folder),
                   "files": {"inputs.json": json.dumps(spec.inputs),
                             "config.json": json.dumps(spec.config)},
                   "dirs": [str(artifacts)] + ([str(cwd)] if spec.folder is None else [])}
        if spec.folder is not None and not spec.folder.is_dir():  # the spare would not start it
            cgroups.remove()
            raise errors.ExecutorError(f"pipeline folder {spec.folder} does not exist")
        return request, cgroups

    async def _fork(self, spec: base.AttemptSpec, *, python: str, script_argv: list[str],
                    venv: pathlib.Path, sink: base.LogSink) -> warm_pool.Forked:
        """What ``LocalExecutor._spawn`` does, with a warm worker in place of ``posix_spawn``."""
        request, cgroups = self._request(spec, script_argv=script_argv, venv=venv)
        try:
            pool = self._pool(python=python, venv=venv)
            forked = await pool.fork(request, on_retry=lambda why: sink.write(
                "system", f"{why}; starting this attempt on another warm worker"))
        except warm_pool.RefusedError as exc:
            cgroups.remove()
            raise errors.ExecutorError(str(exc)) from exc
        except (OSError, errors.ExecutorError) as exc:
            cgroups.remove()
            raise errors.ExecutorError(f"cannot start {script_argv[0]} on a warm worker: {exc}") \
                from exc
        return forked

    def _pool(self, *, python: str, venv: pathlib.Path) -> warm_pool.Pool:
        pool = self._pools.get(python)
        if pool is None:
            # the attempts' base environment is the workers' own: a forked attempt's
            # /proc/self/environ still shows the worker's, so that holds no server secret either
            env = self._base_environment(venv=venv)
            pool = self._pools[python] = warm_pool.Pool(python=python, env=env,
                                                        size=self.workers_per_venv)
            while len(self._pools) > self.max_venvs:  # least recently used venv goes cold
                _, evicted = self._pools.popitem(last=False)
                task = asyncio.get_running_loop().create_task(evicted.close())
                self._closing.add(task)
                task.add_done_callback(self._closing.discard)
        self._pools.move_to_end(python)
        return pool
