"""The Docker executor: one container per attempt through the Docker Engine API.

``start`` prepares a host directory per attempt (a snapshot of the pipeline folder, the bundle
with the entry script, plan and secret env, and the work dir for inputs, config, outputs and the
venv), creates the container from ``docker_specs`` (hardened: uid 1000, read-only root, no
capabilities) and starts it. The worker image must already be in the daemon: nothing is pulled.
The container runs on its own; ``wait`` learns the exit from the daemon, judges it (exit code,
``State.OOMKilled``, the timeout this executor enforces by stopping the container) and reads
outputs and route from the work dir. Logs come from the daemon's log API (``docker_logs``).

``cancel`` kills and removes the container. ``adopt`` finds it again after a restart (by id,
then by its ``kubeline.dev/attempt`` label) and resumes the log after the last stored line.
``close`` stops following and leaves containers running. The daemon must share the host's
filesystem with the server (bind mounts), as a local socket does.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import dataclasses
import json
import os
import pathlib
import re
import shutil
import signal
import time
from typing import Any

import docker
import docker.errors
import requests

from kubeline import task as task_module
from kubeline.domain import errors, states
from kubeline.executors import base, docker_entry, docker_logs, docker_specs
from kubeline.executors.kubernetes import bundles

_SAFE = re.compile(r"[^A-Za-z0-9_.-]")
_WAIT_POLL = 30  # seconds a wait request may hang before it is asked again
_SHIM_FILES = ("__init__.py", "task.py", "components/__init__.py", "components/notebook.py")
_UID = 1000


@dataclasses.dataclass(eq=False)
class _Attempt:
    handle: dict[str, Any]
    sink: base.LogSink
    followers: list[docker_logs.Follower]
    reason: tuple[states.FailureKind, str] | None = None
    task: asyncio.Task[base.AttemptResult] | None = None
    timer: asyncio.TimerHandle | None = None
    removed: asyncio.Event = dataclasses.field(default_factory=asyncio.Event)  # by ``cancel``


class DockerExecutor:
    name = "docker"

    def __init__(self, *, work_dir: pathlib.Path, artifacts_dir: pathlib.Path,
                 defaults: docker_specs.Defaults | None = None, base_url: str | None = None,
                 network: str | None = None, log_line_limit: int = 64 * 1024,
                 kill_grace: float = 5.0, log_drain: float = 60.0) -> None:
        self.work_dir = work_dir
        self.artifacts_dir = artifacts_dir
        self.api = docker.APIClient(base_url=base_url, version="auto", timeout=_WAIT_POLL + 30,
                                    max_pool_size=256)
        self._network = network  # None: picked on the first start (``_pick_network``)
        self.defaults = defaults or docker_specs.Defaults()
        if network is not None:
            self.defaults = dataclasses.replace(self.defaults, network=network)
        self.log_line_limit = log_line_limit
        self.kill_grace = kill_grace
        self.log_drain = log_drain
        self.capabilities = base.Capabilities(adopt=True, memory_limit=True, cpu_limit=True)
        self._attempts: dict[str, _Attempt] = {}
        self._pool = concurrent.futures.ThreadPoolExecutor(512, thread_name_prefix="kubeline-docker")
        self._entry = pathlib.Path(docker_entry.__file__).read_text()
        work_dir.mkdir(parents=True, exist_ok=True, mode=0o700)

    @classmethod
    def from_settings(cls, settings: Any, **kwargs: Any) -> DockerExecutor:
        """Daemon, image, network and paths from ``kubeline.settings.Settings``."""
        return cls(work_dir=settings.home / "docker", artifacts_dir=settings.home / "artifacts",
                   defaults=docker_specs.Defaults(image=settings.docker_image),
                   base_url=settings.docker_host, network=settings.docker_network,
                   log_line_limit=settings.log_line_limit, **kwargs)

    async def _call(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, lambda: fn(*args, **kwargs))

    # starting ---------------------------------------------------------------------------
    async def start(self, spec: base.AttemptSpec, sink: base.LogSink) -> dict[str, Any]:
        if not spec.argv:
            raise errors.ExecutorError(f"stage {spec.stage_id}: nothing to run (empty argv)")
        if spec.folder is not None and not spec.folder.is_dir():
            raise errors.ExecutorError(f"pipeline folder {spec.folder} does not exist")
        if self._network is None:
            await self._pick_network()
        root = self.work_dir / _SAFE.sub("_", spec.attempt_id)
        artifacts = (self.artifacts_dir / _SAFE.sub("_", spec.run_id)
                     / _SAFE.sub("_", spec.stage_id) / str(spec.number))
        dirs = await self._call(self._prepare, spec, root=root, artifacts=artifacts)
        plan = docker_specs.container(spec, defaults=self.defaults, dirs=dirs)
        try:
            await self._call(self._remove_quietly, plan.name)  # left by a start that crashed
            created = await self._call(
                self.api.create_container, plan.image, plan.command, name=plan.name,
                user=plan.user, working_dir=plan.working_dir, environment=plan.environment,
                labels=plan.labels, host_config=plan.host_config, stdin_open=False, tty=False)
            await self._call(self.api.start, created["Id"])
        except (docker.errors.DockerException, requests.RequestException) as exc:
            await self._call(self._remove_quietly, plan.name)
            shutil.rmtree(root, ignore_errors=True)
            raise errors.ExecutorError(self._start_error(spec, exc)) from None
        now = time.time()
        handle = {
            "attempt_id": spec.attempt_id, "container": created["Id"], "name": plan.name,
            "dir": str(root), "started_at": now, "timeout": spec.timeout,
            "deadline": now + spec.timeout if spec.timeout else None,
            "memory_limit": spec.resources.limits.memory,
        }
        self._follow(handle, sink, {"stdout": docker_logs.Position(), "stderr": docker_logs.Position()})
        return handle

    async def _pick_network(self) -> None:
        """No network configured: the default bridge when the daemon has one, else none."""
        found = await self._call(self.api.networks, names=["bridge"])
        self._network = "bridge" if any(n.get("Name") == "bridge" for n in found) else "none"
        self.defaults = dataclasses.replace(self.defaults, network=self._network)

    def _prepare(self, spec: base.AttemptSpec, *, root: pathlib.Path,
                 artifacts: pathlib.Path) -> docker_specs.HostDirs:
        """The attempt's host directory: code snapshot (ro), bundle (ro), work dir (rw)."""
        shutil.rmtree(root, ignore_errors=True)
        root.mkdir(mode=0o700)
        code = None
        if spec.folder is not None:
            code = root / "code"
            shutil.copytree(spec.folder, code, symlinks=True, ignore=_skip_caches)
            _readable(code)
        bundle = root / "bundle"
        (bundle / "shim" / "kubeline" / "components").mkdir(parents=True)
        (bundle / "entry.py").write_text(self._entry)
        (bundle / "plan.json").write_text(json.dumps(docker_specs.plan(spec)))
        if spec.requirements is not None:
            shutil.copyfile(spec.requirements, bundle / "requirements.txt")
        package = pathlib.Path(task_module.__file__).parent
        for name in _SHIM_FILES:
            if (package / name).is_file():
                shutil.copyfile(package / name, bundle / "shim" / "kubeline" / name)
        _readable(bundle)
        secret_env = bundle / "env.json"
        fd = os.open(secret_env, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            json.dump(docker_specs.secret_environment(spec), handle)
        work = root / "work"
        for sub in ("io", "home", "tmp"):
            (work / sub).mkdir(parents=True)
        (work / "io" / "inputs.json").write_text(json.dumps(spec.inputs))
        (work / "io" / "config.json").write_text(json.dumps(spec.config))
        artifacts.mkdir(parents=True, exist_ok=True)
        for path in (secret_env, work, *work.rglob("*"), artifacts):
            _give_to_container(path)
        return docker_specs.HostDirs(code=str(code) if code else None, bundle=str(bundle),
                                     work=str(work), artifacts=str(artifacts))

    def _start_error(self, spec: base.AttemptSpec, exc: Exception) -> str:
        if isinstance(exc, docker.errors.ImageNotFound):
            return (f"stage {spec.stage_id}: image {self.defaults.image!r} is not in the Docker "
                    "daemon (nothing is pulled): load it with `docker load -i <tarball>` "
                    "(scripts/local-cluster load-image builds kubeline-worker:dev)")
        if isinstance(exc, docker.errors.APIError):
            return f"stage {spec.stage_id}: Docker refused the container: {exc.explanation or exc}"
        return f"stage {spec.stage_id}: cannot reach the Docker daemon: {exc}"

    def _remove_quietly(self, container: str) -> None:
        with contextlib.suppress(docker.errors.NotFound, docker.errors.APIError):
            self.api.remove_container(container, force=True)

    # following and waiting --------------------------------------------------------------
    def _follow(self, handle: dict[str, Any], sink: base.LogSink,
                positions: dict[str, docker_logs.Position]) -> _Attempt:
        loop = asyncio.get_running_loop()
        container = handle["container"]

        def opener(stream: str) -> Any:
            def open_stream(since: int | None, *, follow: bool) -> Any:
                return self.api.logs(container, stdout=stream == "stdout",
                                     stderr=stream == "stderr", stream=True, follow=follow,
                                     timestamps=True, since=since)
            return open_stream

        def still_running() -> bool:
            return bool(self.api.inspect_container(container)["State"]["Running"])

        followers = [docker_logs.Follower(open_stream=opener(name), stream=name, sink=sink,
                                          loop=loop, position=positions[name],
                                          line_limit=self.log_line_limit,
                                          still_running=still_running)
                     for name in ("stdout", "stderr")]
        attempt = _Attempt(handle=handle, sink=sink, followers=followers)
        self._attempts[handle["attempt_id"]] = attempt
        attempt.task = loop.create_task(self._run(attempt))
        deadline = handle.get("deadline")
        if deadline:
            attempt.timer = loop.call_later(
                max(0.0, deadline - time.time()), self._stop, attempt,
                states.FailureKind.TIMEOUT, f"timed out after {handle['timeout']:g}s")
        return attempt

    async def _run(self, attempt: _Attempt) -> base.AttemptResult:
        readers = [asyncio.get_running_loop().run_in_executor(self._pool, f.run)
                   for f in attempt.followers]
        container = attempt.handle["container"]
        state: dict[str, Any] | None = None
        removed = asyncio.ensure_future(attempt.removed.wait())
        while state is None:
            waiter = asyncio.ensure_future(self._call(self.api.wait, container, timeout=_WAIT_POLL))
            await asyncio.wait({waiter, removed}, return_when=asyncio.FIRST_COMPLETED)
            if removed.done():  # cancelled: the daemon may never answer the wait
                waiter.cancel()
                break
            try:
                waiter.result()
                state = (await self._call(self.api.inspect_container, container))["State"]
            except docker.errors.NotFound:
                break
            except requests.RequestException:
                continue  # a quiet attempt: the wait request timed out
            if state is not None and state.get("Running"):
                state = None  # restarted under us (should not happen): wait again
        removed.cancel()
        if attempt.timer is not None:
            attempt.timer.cancel()
        if state is None:
            for follower in attempt.followers:
                follower.stop()
        try:
            # A removed container's follow stream may never end: give it a moment, then close it.
            gone = state is None or attempt.removed.is_set() or (
                attempt.reason is not None and attempt.reason[0] is states.FailureKind.CANCELLED)
            await asyncio.wait_for(asyncio.gather(*readers), 0.5 if gone else self.log_drain)
        except TimeoutError:
            for follower in attempt.followers:
                follower.stop()
        await asyncio.sleep(0)  # the last batch handed over by the reader threads
        result = self._judge(attempt, state)
        if result.failure is not None:
            attempt.sink.write("system", f"attempt {result.failure.value}: {result.error}")
        attempt.sink.close()
        return result

    def _judge(self, attempt: _Attempt,  # noqa: PLR0911 - one return per way to end
               state: dict[str, Any] | None) -> base.AttemptResult:
        code = state.get("ExitCode") if state else None
        if attempt.reason is not None:
            kind, error = attempt.reason
            return base.AttemptResult(exit_code=code, failure=kind, error=error)
        if state is None:
            return base.AttemptResult(exit_code=None, failure=states.FailureKind.LOST,
                                      error="its container was removed while it ran")
        if state.get("OOMKilled"):
            return base.AttemptResult(
                exit_code=code, failure=states.FailureKind.OOM,
                error=f"exceeded its memory limit of {attempt.handle.get('memory_limit')}")
        if state.get("Error"):
            return base.AttemptResult(exit_code=code, failure=states.FailureKind.START_FAILED,
                                      error=f"its container could not start: {state['Error']}")
        if code == docker_entry.SETUP_FAILED and (
                pathlib.Path(attempt.handle["dir"]) / "work" / docker_entry.SETUP_MARKER).exists():
            return base.AttemptResult(exit_code=code, failure=states.FailureKind.START_FAILED,
                                      error="preparing its Python environment failed (see the log)")
        if isinstance(code, int) and code > 128 and code - 128 < signal.NSIG:
            try:
                name = signal.Signals(code - 128).name
            except ValueError:
                name = f"signal {code - 128}"
            return base.AttemptResult(exit_code=code, failure=states.FailureKind.EXIT_CODE,
                                      error=f"killed by signal {name}")
        if code != 0:
            return base.AttemptResult(exit_code=code, failure=states.FailureKind.EXIT_CODE,
                                      error=f"exited with code {code}")
        return _outputs(pathlib.Path(attempt.handle["dir"]) / "work" / "io")

    def _stop(self, attempt: _Attempt, kind: states.FailureKind, error: str) -> None:
        if attempt.reason is not None or (attempt.task is not None and attempt.task.done()):
            return
        attempt.reason = (kind, error)
        container, grace = attempt.handle["container"], max(0, round(self.kill_grace))
        self._pool.submit(self._stop_quietly, container, grace)

    def _stop_quietly(self, container: str, grace: int) -> None:
        with contextlib.suppress(docker.errors.APIError, requests.RequestException):
            self.api.stop(container, timeout=grace)

    async def wait(self, handle: dict[str, Any]) -> base.AttemptResult:
        attempt = self._attempts.get(handle["attempt_id"])
        if attempt is None or attempt.task is None:
            raise errors.ExecutorError(
                f"attempt {handle['attempt_id']} is not followed by this executor; adopt it first")
        result = await asyncio.shield(attempt.task)
        if self._attempts.get(handle["attempt_id"]) is attempt:
            del self._attempts[handle["attempt_id"]]
            await self._call(self._cleanup, handle)
        return result

    def _cleanup(self, handle: dict[str, Any]) -> None:
        self._remove_quietly(handle["container"])
        shutil.rmtree(handle["dir"], ignore_errors=True)  # inputs and secret env

    # cancel, adopt, close ---------------------------------------------------------------
    async def cancel(self, handle: dict[str, Any]) -> None:
        attempt = self._attempts.get(handle["attempt_id"])
        if attempt is not None and attempt.reason is None:
            attempt.reason = (states.FailureKind.CANCELLED, "was cancelled")
        try:
            await self._call(self.api.remove_container, handle["container"], force=True)
        except docker.errors.NotFound:
            pass
        except (docker.errors.APIError, requests.RequestException) as exc:
            raise errors.ExecutorError(f"cannot remove container {handle.get('name')}: {exc}") from None
        if attempt is not None:
            attempt.removed.set()
        else:
            shutil.rmtree(handle["dir"], ignore_errors=True)

    async def adopt(self, handle: dict[str, Any], sink: base.LogSink) -> bool:
        if handle["attempt_id"] in self._attempts:
            return True
        found = await self._call(self._find, handle)
        if found is None:
            return False
        if not await self._call(pathlib.Path(handle["dir"]).is_dir):  # its outputs are lost with it
            await self._call(self._remove_quietly, found)
            return False
        handle = {**handle, "container": found}
        positions = await docker_logs.stored_positions(sink)
        self._follow(handle, sink, positions)
        return True

    def _find(self, handle: dict[str, Any]) -> str | None:
        with contextlib.suppress(docker.errors.NotFound):
            return str(self.api.inspect_container(handle["container"])["Id"])
        label = f"{docker_specs.ATTEMPT_LABEL}={docker_specs.label_value(handle['attempt_id'])}"
        matches = self.api.containers(all=True, filters={"label": label})
        return str(matches[0]["Id"]) if matches else None

    async def close(self) -> None:
        """Stop following; containers keep running (a restarted server adopts them)."""
        attempts = list(self._attempts.values())
        self._attempts.clear()
        for attempt in attempts:
            if attempt.timer is not None:
                attempt.timer.cancel()
            for follower in attempt.followers:
                follower.stop()
            if attempt.task is not None:
                attempt.task.cancel()
        for attempt in attempts:
            if attempt.task is not None:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await attempt.task
            attempt.sink.close()
        self._pool.shutdown(wait=False, cancel_futures=True)
        self.api.close()


def _outputs(io_dir: pathlib.Path) -> base.AttemptResult:
    return base.collected_result(io_dir)


def _skip_caches(_folder: str, names: list[str]) -> set[str]:
    return {n for n in names if n in bundles.SKIP_DIRS or n.endswith(bundles.SKIP_SUFFIXES)}


def _readable(root: pathlib.Path) -> None:
    """Files 0644 (0755 when executable), dirs 0755: uid 1000 reads what the server copied."""
    for path in (root, *root.rglob("*")):
        if path.is_symlink():
            continue
        mode = path.stat().st_mode
        path.chmod(0o755 if path.is_dir() or mode & 0o111 else 0o644)


def _give_to_container(path: pathlib.Path) -> None:
    """The container's user owns what it writes to; a non-root server opens it up instead."""
    try:
        os.chown(path, _UID, _UID)
    except PermissionError:
        path.chmod(0o777 if path.is_dir() else 0o666)
