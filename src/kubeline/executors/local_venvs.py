"""Per-pipeline virtualenvs made with uv, cached by content hash.

A venv's key is the sha256 of (python version, requirements file content, extra packages, the
runtime-shim source), so an edit to ``requirements.txt`` or a Kubeline upgrade that changes
``kubeline.task`` gives a fresh venv, and every stage without requirements shares one venv per
python version. Builds are safe across processes: an ``fcntl`` lock per key, the build in a
temp dir, an atomic rename into place (``uv venv --relocatable`` keeps entry points working
after the rename). A failed build leaves nothing behind.

Each venv gets a tiny shim, ``site-packages/kubeline`` holding copies of the import-light
modules (``kubeline/__init__.py``, ``task.py``, the notebook component), so scripts can
``from kubeline import task`` without Kubeline's dependencies leaking into the pipeline.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import hashlib
import json
import os
import pathlib
import shutil
import subprocess
import uuid
from collections.abc import Mapping, Sequence

from kubeline.domain import errors

_PACKAGE = pathlib.Path(__file__).resolve().parent.parent  # src/kubeline
SHIM_FILES = ("__init__.py", "task.py", "components/__init__.py", "components/notebook.py")
_READY = ".kubeline-ready"
_MAX_ERROR = 2000  # characters of uv's output kept in an error message


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

    def key(self, python_version: str, requirements: pathlib.Path | None,
            extra_packages: Sequence[str] = ()) -> str:
        parts = {"python": python_version, "requirements": self._digest(requirements),
                 "extra": sorted(extra_packages), "shim": self._shim_version}
        return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()

    async def ensure(self, python_version: str, requirements: pathlib.Path | None,
                     extra_packages: Sequence[str] = ()) -> pathlib.Path:
        """The venv for these settings, built once (also across processes) and then reused."""
        key = self.key(python_version, requirements, extra_packages)
        memo = (key, python_version, tuple(extra_packages))
        cached = self._ready.get(memo)
        if cached is not None:
            _touch(cached)
            return cached
        lock = self._locks.setdefault(key, asyncio.Lock())
        async with lock:
            venv = self.root / key[:32]
            if not (venv / _READY).exists():
                await asyncio.to_thread(self._build_locked, key=key, venv=venv,
                                        python_version=python_version,
                                        requirements=requirements, extra_packages=extra_packages)
            self._ready[memo] = venv
            _touch(venv)
            return venv

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
        locks = self.root / ".locks"
        locks.mkdir(parents=True, exist_ok=True)
        with (locks / f"{key}.lock").open("w") as lock_file:
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
            finally:
                shutil.rmtree(temp, ignore_errors=True)

    def _build(self, temp: pathlib.Path, *, python_version: str,
               requirements: pathlib.Path | None, extra_packages: Sequence[str]) -> None:
        made = self._uv_run("venv", "--quiet", "--relocatable", "--python", python_version,
                            str(temp))
        if made.returncode != 0:
            output = made.stderr.strip()
            if "Invalid version request" in output:
                raise errors.ExecutorError(f"python_version {python_version!r} cannot be used "
                                           f"({_tail(output)}); change python_version")
            if "interpreter" in output or "not found" in output or "No Python" in output:
                raise errors.ExecutorError(
                    f"Python {python_version} is not installed; install it or change "
                    f"python_version (uv: {_tail(output)})"
                )
            raise errors.ExecutorError(f"creating a Python {python_version} venv failed: "
                                       f"{_tail(output)}")
        python = str(temp / "bin" / "python")
        if requirements is not None:
            installed = self._uv_run("pip", "install", "--quiet", "--python", python,
                                     "-r", str(requirements))
            if installed.returncode != 0:
                raise errors.ExecutorError(f"pip install of {requirements.name} failed: "
                                           f"{_tail(installed.stderr.strip())}")
        if extra_packages:
            installed = self._uv_run("pip", "install", "--quiet", "--python", python,
                                     *extra_packages)
            if installed.returncode != 0:
                raise errors.ExecutorError(f"pip install of {' '.join(extra_packages)} failed: "
                                           f"{_tail(installed.stderr.strip())}")
        self._install_shim(temp)

    def _install_shim(self, venv: pathlib.Path) -> None:
        site_packages = next(venv.glob("lib/python*/site-packages"), None)
        if site_packages is None:
            raise errors.ExecutorError(f"the venv at {venv} has no site-packages directory")
        for name, content in self._shim.items():
            target = site_packages / "kubeline" / name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(content)

    def _uv_run(self, *args: str) -> subprocess.CompletedProcess[str]:
        try:
            return subprocess.run([self._uv, *args], env=self._env, capture_output=True,
                                  text=True, check=False, stdin=subprocess.DEVNULL)
        except OSError as exc:
            raise errors.ExecutorError(f"cannot run uv ({self._uv}): {exc.strerror}") from exc


def _tail(text: str) -> str:
    return text if len(text) <= _MAX_ERROR else "..." + text[-_MAX_ERROR:]


def _touch(venv: pathlib.Path) -> None:
    """Mark the venv used now: retention prunes venvs by the age of this mark, not of the build."""
    with contextlib.suppress(OSError):
        os.utime(venv / _READY)
