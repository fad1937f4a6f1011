"""Per-pipeline virtualenvs made with uv, cached by content hash.

A venv's key is the sha256 of (python version, requirements file content, extra packages, the
runtime-shim source), so an edit to ``requirements.txt`` or a Kubeline upgrade that changes
``kubeline.task`` gives a fresh venv, and every stage without requirements shares one venv per
python version. Builds are safe across processes: an ``fcntl`` lock per key, the build in a
temp dir, an atomic rename into place (``uv venv --relocatable`` keeps entry points working
after the rename). A failed build leaves nothing behind.

``python_version`` is resolved to an interpreter path by ``local_pythons`` (uv's finds, pyenv's and
uv's install dirs), so a version pyenv holds but has not selected still works, and a missing one is
explained. A ``requirements.txt.lock`` is installed exactly (``uv pip sync``: no resolution, every
line pinned, nothing missing). A failed build is recorded beside the venvs (``.failed/KEY.json``)
until a build of that key succeeds, so every process on the machine can show why
(``status``): the pipeline's environment state.

Each venv gets a tiny shim, ``site-packages/kubeline`` holding copies of the import-light
modules (``kubeline/__init__.py``, ``task.py``, the notebook component), so scripts can
``from kubeline import task`` without Kubeline's dependencies leaking into the pipeline.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime as dt
import fcntl
import hashlib
import json
import os
import pathlib
import shutil
import subprocess
import time
import uuid
from collections.abc import Mapping, Sequence
from typing import Literal

from kubeline.domain import errors
from kubeline.executors import local_lockfiles, local_pythons

_PACKAGE = pathlib.Path(__file__).resolve().parent.parent  # src/kubeline
SHIM_FILES = ("__init__.py", "task.py", "components/__init__.py", "components/notebook.py")
_READY = ".kubeline-ready"
_MAX_ERROR = 2000  # characters of uv's output kept in an error message
_TOUCH_EVERY = 60.0  # seconds between marks of a venv as used (retention counts days)
VenvState = Literal["ready", "building", "failed", "missing"]


@dataclasses.dataclass(frozen=True, kw_only=True)
class VenvStatus:
    key: str
    state: VenvState
    reason: str | None = None  # why it failed
    path: pathlib.Path | None = None  # when ready
    failed_at: dt.datetime | None = None


@dataclasses.dataclass(frozen=True, kw_only=True)
class Package:
    name: str
    version: str


def find_uv() -> str:
    import uv

    return str(uv.find_uv_bin())


def shim_sources() -> dict[str, bytes]:
    """The shim files that exist in this Kubeline install, by path relative to the package."""
    found = {}
    for name in SHIM_FILES:
        path = _PACKAGE / name
        if path.is_file():
            found[name] = path.read_bytes()
    if "components/notebook.py" in found and "components/__init__.py" not in found:
        found["components/__init__.py"] = b""
    return found


class VenvCache:
    def __init__(self, root: pathlib.Path, *, uv: str | None = None,
                 uv_cache_dir: pathlib.Path | None = None,
                 environ: Mapping[str, str] | None = None) -> None:
        self.root = root
        self._uv = uv or find_uv()
        self._shim = shim_sources()
        self._shim_version = hashlib.sha256(
            json.dumps({k: v.hex() for k, v in sorted(self._shim.items())}).encode()
        ).hexdigest()
        env = dict(os.environ if environ is None else environ)
        env.setdefault("UV_PYTHON_DOWNLOADS", "never")  # a download would leave the registries
        env["UV_CACHE_DIR"] = str(uv_cache_dir or root.parent / "uv-cache")
        for name in ("VIRTUAL_ENV", "CONDA_PREFIX", "UV_PROJECT_ENVIRONMENT"):
            env.pop(name, None)  # never let the server's own venv be the install target
        self._env = env
        self._ready: dict[tuple[str, str, tuple[str, ...]], pathlib.Path] = {}
        self._requirement_digests: dict[tuple[str, int, int], str] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._touched: dict[pathlib.Path, float] = {}  # venv -> when this process last marked it used
        self._building: set[str] = set()
        self._running: set[subprocess.Popen[str]] = set()
        self._closing = False
        self.pythons = local_pythons.Inventory(uv=self._uv, environ=env)

    def key(self, python_version: str, requirements: pathlib.Path | None,
            extra_packages: Sequence[str] = ()) -> str:
        parts = {"python": python_version, "requirements": self._digest(requirements),
                 "extra": sorted(extra_packages), "shim": self._shim_version}
        return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()

    def ready(self, python_version: str, requirements: pathlib.Path | None,
              extra_packages: Sequence[str] = ()) -> pathlib.Path | None:
        """The venv for these settings when this process built or found it already, else None
        (no waiting, nothing built)."""
        key = self.key(python_version, requirements, extra_packages)
        return self._ready.get((key, python_version, tuple(extra_packages)))

    async def ensure(self, python_version: str, requirements: pathlib.Path | None,
                     extra_packages: Sequence[str] = ()) -> pathlib.Path:
        """The venv for these settings, built once (also across processes) and then reused."""
        key = self.key(python_version, requirements, extra_packages)
        memo = (key, python_version, tuple(extra_packages))
        cached = self._ready.get(memo)
        if cached is not None:
            self._touch(cached)
            return cached
        lock = self._locks.setdefault(key, asyncio.Lock())
        async with lock:
            venv = self.root / key[:32]
            if not (venv / _READY).exists():
                self._building.add(key)
                try:
                    await asyncio.to_thread(self._build_locked, key=key, venv=venv,
                                            python_version=python_version,
                                            requirements=requirements, extra_packages=extra_packages)
                finally:
                    self._building.discard(key)
            self._ready[memo] = venv
            self._touch(venv)
            return venv

    def _touch(self, venv: pathlib.Path) -> None:
        """``_touch``, at most once a minute per venv: retention counts days, and a ``utime`` is
        a journaled write on the event loop for every attempt otherwise."""
        now = time.monotonic()
        if now - self._touched.get(venv, -_TOUCH_EVERY) >= _TOUCH_EVERY:
            self._touched[venv] = now
            _touch(venv)

    @property
    def building(self) -> frozenset[str]:
        """Keys this process is building now."""
        return frozenset(self._building)

    def status(self, key: str) -> VenvStatus:
        """Ready (built), building (here or in another process), failed (with the reason of the
        last build of this key on this machine) or missing (never built, or pruned)."""
        venv = self.root / key[:32]
        if (venv / _READY).exists():
            return VenvStatus(key=key, state="ready", path=venv)
        if key in self._building or _is_held(self._lock_path(key)):
            return VenvStatus(key=key, state="building")
        failure = self._failure(key)
        if failure is not None:
            return failure
        return VenvStatus(key=key, state="missing")

    def path_of(self, key: str) -> pathlib.Path:
        return self.root / key[:32]

    def packages(self, venv: pathlib.Path) -> list[Package]:
        """What is installed in a venv, as uv reports it (name and version, sorted by name)."""
        listed = self._uv_run("pip", "list", "--python", str(venv / "bin" / "python"),
                              "--format", "json")
        if listed.returncode != 0:
            raise errors.ExecutorError(f"cannot list the packages of {venv}: {_tail(listed.stderr.strip())}")
        found = [Package(name=str(p["name"]), version=str(p["version"])) for p in json.loads(listed.stdout or "[]")]
        return sorted(found, key=lambda p: p.name.lower())

    def python_of(self, venv: pathlib.Path) -> str | None:
        """The full version of a venv's interpreter, from its ``pyvenv.cfg``."""
        try:
            lines = (venv / "pyvenv.cfg").read_text().splitlines()
        except OSError:
            return None
        for line in lines:
            name, _, value = line.partition("=")
            if name.strip() in ("version_info", "version"):
                return value.strip()
        return None

    def _lock_path(self, key: str) -> pathlib.Path:
        return self.root / ".locks" / f"{key}.lock"

    def _failure_path(self, key: str) -> pathlib.Path:
        return self.root / ".failed" / f"{key}.json"

    def _failure(self, key: str) -> VenvStatus | None:
        try:
            recorded = json.loads(self._failure_path(key).read_text())
        except (OSError, ValueError):
            return None
        return VenvStatus(key=key, state="failed", reason=str(recorded.get("reason", "")),
                          failed_at=dt.datetime.fromisoformat(recorded["at"]) if recorded.get("at") else None)

    def _record_failure(self, key: str, reason: str) -> None:
        path = self._failure_path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        temp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}")
        temp.write_text(json.dumps({"reason": reason, "at": dt.datetime.now(dt.UTC).isoformat()}))
        temp.replace(path)

    def _digest(self, requirements: pathlib.Path | None) -> str:
        if requirements is None:
            return ""
        try:
            stat = requirements.stat()
            memo = (str(requirements), stat.st_mtime_ns, stat.st_size)
            digest = self._requirement_digests.get(memo)
            if digest is None:
                digest = hashlib.sha256(requirements.read_bytes()).hexdigest()
                self._requirement_digests[memo] = digest
        except OSError as exc:
            raise errors.ExecutorError(
                f"cannot read requirements file {requirements}: {exc.strerror}"
            ) from exc
        return digest

    def _build_locked(self, *, key: str, venv: pathlib.Path, python_version: str,
                      requirements: pathlib.Path | None, extra_packages: Sequence[str]) -> None:
        lock_path = self._lock_path(key)
        lock_path.parent.mkdir(parents=True, exist_ok=True)
        with lock_path.open("w") as lock_file:
            fcntl.flock(lock_file, fcntl.LOCK_EX)
            if (venv / _READY).exists():
                return  # another process built it while we waited
            for stale in self.root.glob(f".tmp-{key[:32]}-*"):
                shutil.rmtree(stale, ignore_errors=True)  # a build that crashed midway
            if venv.exists():
                shutil.rmtree(venv)  # not marked ready: half-built by an old version
            temp = self.root / f".tmp-{key[:32]}-{uuid.uuid4().hex[:8]}"
            try:
                self._build(temp, python_version=python_version, requirements=requirements,
                            extra_packages=extra_packages)
                (temp / _READY).write_text(key)
                temp.rename(venv)
            except errors.ExecutorError as exc:
                if not self._closing:
                    self._record_failure(key, str(exc))
                raise
            finally:
                shutil.rmtree(temp, ignore_errors=True)
            self._failure_path(key).unlink(missing_ok=True)

    def _build(self, temp: pathlib.Path, *, python_version: str,
               requirements: pathlib.Path | None, extra_packages: Sequence[str]) -> None:
        interpreter = self.pythons.resolve(python_version)
        made = self._uv_run("venv", "--quiet", "--relocatable", "--python", str(interpreter.path),
                            str(temp))
        if made.returncode != 0:
            raise errors.ExecutorError(f"creating a Python {python_version} venv with "
                                       f"{interpreter.path} failed: {_tail(made.stderr.strip())}")
        python = str(temp / "bin" / "python")
        if requirements is not None and requirements.name.endswith(".lock"):
            self._install_lock(python, requirements)
        elif requirements is not None:
            installed = self._uv_run("pip", "install", "--quiet", "--python", python,
                                     "-r", str(requirements))
            if installed.returncode != 0:
                raise errors.ExecutorError(f"pip install of {requirements.name} failed: "
                                           f"{_uv_error(installed.stderr)}")
        if extra_packages:
            installed = self._uv_run("pip", "install", "--quiet", "--python", python,
                                     *extra_packages)
            if installed.returncode != 0:
                raise errors.ExecutorError(f"pip install of {' '.join(extra_packages)} failed: "
                                           f"{_tail(installed.stderr.strip())}")
        self._install_shim(temp)

    def _install_lock(self, python: str, lock: pathlib.Path) -> None:
        """Exactly the pinned set: no resolution, nothing added, nothing missing."""
        unpinned = local_lockfiles.unpinned_lines(_read(lock))
        if unpinned:
            number, line = unpinned[0]
            raise errors.ExecutorError(
                f"{lock.name} line {number}: {line!r} is not pinned (a lock gives every package as "
                f"name==version); regenerate it with `uv pip compile requirements.txt -o {lock.name}`")
        synced = self._uv_run("pip", "sync", "--strict", "--python", python, str(lock))
        if synced.returncode != 0:
            raise errors.ExecutorError(f"installing {lock.name} failed: {_uv_error(synced.stderr)}")
        missing = local_lockfiles.missing_dependencies(synced.stderr)
        if missing:
            raise errors.ExecutorError(
                f"{lock.name} is incomplete: {'; '.join(missing)}; a lock lists every dependency, "
                f"regenerate it with `uv pip compile requirements.txt -o {lock.name}`")

    def _install_shim(self, venv: pathlib.Path) -> None:
        site_packages = next(venv.glob("lib/python*/site-packages"), None)
        if site_packages is None:
            raise errors.ExecutorError(f"the venv at {venv} has no site-packages directory")
        for name, content in self._shim.items():
            target = site_packages / "kubeline" / name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(content)

    async def close(self) -> None:
        """Stop the uv processes of builds still running (a shutdown does not wait for installs);
        their builds fail without recording a reason and leave nothing behind."""
        self._closing = True
        for process in list(self._running):
            with contextlib.suppress(ProcessLookupError):
                process.kill()

    def _uv_run(self, *args: str) -> subprocess.CompletedProcess[str]:
        if self._closing:
            raise errors.ExecutorError("the venv cache is closing")
        try:
            process = subprocess.Popen([self._uv, *args], env=self._env, stdout=subprocess.PIPE,
                                       stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL)
        except OSError as exc:
            raise errors.ExecutorError(f"cannot run uv ({self._uv}): {exc.strerror}") from exc
        self._running.add(process)
        try:
            stdout, stderr = process.communicate()
        finally:
            self._running.discard(process)
        if self._closing:
            raise errors.ExecutorError("the venv cache is closing")
        return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)


def _is_held(lock_path: pathlib.Path) -> bool:
    """Another process builds this key now: its ``flock`` is held (we cannot take it at once)."""
    if not lock_path.exists():
        return False
    try:
        with lock_path.open("a") as lock_file:
            try:
                fcntl.flock(lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return True
            fcntl.flock(lock_file, fcntl.LOCK_UN)
    except OSError:
        return False
    return False


def _read(path: pathlib.Path) -> str:
    try:
        return path.read_text()
    except OSError as exc:
        raise errors.ExecutorError(f"cannot read {path}: {exc.strerror}") from exc


def _uv_error(stderr: str) -> str:
    """uv's message on one line, without its progress lines (``Using Python ...``, ``Resolved ...``)."""
    kept = []
    for line in stderr.strip().splitlines():
        text = " ".join(line.split())
        if not text or text.startswith(("Using Python", "Resolved ", "Prepared ", "Audited ")):
            continue
        kept.append(text.removeprefix("error: ").removeprefix("cause: ").removeprefix("Caused by: "))
    return _tail(": ".join(kept))


def _tail(text: str) -> str:
    return text if len(text) <= _MAX_ERROR else "..." + text[-_MAX_ERROR:]


def _touch(venv: pathlib.Path) -> None:
    """Mark the venv used now: retention prunes venvs by the age of this mark, not of the build."""
    with contextlib.suppress(OSError):
        os.utime(venv / _READY)
