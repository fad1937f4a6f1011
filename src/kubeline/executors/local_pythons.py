"""Which Python interpreters this machine has, and which one a ``python_version`` means.

``uv venv --python 3.12`` searches ``PATH`` and uv's own install dir. On a machine with pyenv,
``PATH`` holds pyenv *shims*: a shim of a version that is installed but not selected
(``pyenv global``) fails with "pyenv: python3.12: command not found", and uv passed that through
as the reason although Python 3.12 sits in ``~/.pyenv/versions/3.12.1``. So the interpreters are
looked up in three places, in this order, the first answer winning:

- what uv finds itself (``uv python find --system``: never a virtualenv, so not the server's own);
- ``$PYENV_ROOT/versions/*/bin/python3`` (default ``~/.pyenv``) and uv's managed installs
  (``uv python dir``, ``$UV_PYTHON_INSTALL_DIR``), each interpreter asked its version directly;
- only to explain a miss: everything uv lists (``uv python list --only-installed``, slow on a
  machine with many pyenv shims, seconds) plus the directories above.

A request is a version prefix (``3``, ``3.12``, ``3.12.1``); the newest interpreter of the
directories that matches is handed to uv as a path. When none matches, ``MissingPython`` says
which versions exist and how to add one. Answers are kept per process.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import re
import subprocess
from collections.abc import Mapping, Sequence

from kubeline.domain import errors

_VERSION = re.compile(r"^(\d+)(?:\.(\d+))?(?:\.(\d+))?")
_PROBE = "import sys, platform; print('%d.%d.%d' % sys.version_info[:3], platform.python_implementation())"


@dataclasses.dataclass(frozen=True, kw_only=True)
class Interpreter:
    version: str  # "3.12.1"
    path: pathlib.Path
    source: str  # "uv", "pyenv", "uv-managed"

    @property
    def parts(self) -> tuple[int, ...]:
        return parse(self.version) or ()


class MissingPython(errors.ExecutorError):
    """The requested ``python_version`` has no interpreter here (the message says what to do)."""


def parse(version: str) -> tuple[int, ...] | None:
    found = _VERSION.match(version.strip())
    if found is None:
        return None
    return tuple(int(p) for p in found.groups() if p is not None)


def matches(interpreter: Interpreter, request: str) -> bool:
    wanted = parse(request)
    return wanted is not None and interpreter.parts[:len(wanted)] == wanted


def choose(interpreters: Sequence[Interpreter], request: str) -> Interpreter | None:
    """The newest interpreter whose version starts with ``request``."""
    fitting = [i for i in interpreters if matches(i, request)]
    if not fitting:
        return None
    return max(fitting, key=lambda i: (i.parts, -_rank(i)))


def _rank(interpreter: Interpreter) -> int:
    """A real binary before a shim (whose answer depends on ``pyenv global``)."""
    if "shims" in interpreter.path.parts:
        return 9
    return {"pyenv": 0, "uv": 1, "uv-managed": 2}.get(interpreter.source, 5)


def missing_message(request: str, interpreters: Sequence[Interpreter]) -> str:
    versions = sorted({i.version for i in interpreters}, key=lambda v: parse(v) or ())
    present = ", ".join(versions) if versions else "none"
    return (f"python_version {request!r}: no Python {request} on this machine (present: {present}); "
            f"add one with `uv python install {request}` or `pyenv install {request}`, "
            f"or set python_version to one of the present versions")


class Inventory:
    """The interpreters found, asked once per process and again after ``refresh``."""

    def __init__(self, *, uv: str, environ: Mapping[str, str]) -> None:
        self._uv = uv
        self._env = dict(environ)
        self._resolved: dict[str, Interpreter] = {}
        self._dirs: list[Interpreter] | None = None

    def interpreters(self) -> list[Interpreter]:
        """Every interpreter found (uv's list and the directories): for listings and messages."""
        return _dedupe([*self._from_uv(), *self._from_dirs()])

    def resolve(self, request: str) -> Interpreter:
        """The interpreter for ``request``; ``MissingPython`` lists what is present otherwise."""
        known = self._resolved.get(request)
        if known is not None and known.path.exists():
            return known
        chosen = self._uv_find(request) or choose(self._from_dirs(), request)
        if chosen is None:
            self._dirs = None  # a version installed since the last look counts at once
            everything = self.interpreters()
            chosen = choose(everything, request)
            if chosen is None:
                raise MissingPython(missing_message(request, everything))
        self._resolved[request] = chosen
        return chosen

    def _uv_find(self, request: str) -> Interpreter | None:
        found = self._run(self._uv, "python", "find", "--system", request).strip()
        if not found:
            return None
        probed = self._probe(pathlib.Path(found))
        if probed is None or parse(request) is None:
            return None
        interpreter = Interpreter(version=probed, path=pathlib.Path(found), source="uv")
        return interpreter if matches(interpreter, request) else None

    def _from_uv(self) -> list[Interpreter]:
        listed = self._run(self._uv, "python", "list", "--only-installed", "--output-format", "json")
        try:
            entries = json.loads(listed) if listed else []
        except json.JSONDecodeError:
            return []
        found = []
        for entry in entries if isinstance(entries, list) else []:
            path, version = entry.get("path"), entry.get("version")
            if not path or not version or entry.get("implementation", "cpython") != "cpython":
                continue
            found.append(Interpreter(version=str(version), path=pathlib.Path(path), source="uv"))
        return found

    def _from_dirs(self) -> list[Interpreter]:
        if self._dirs is None:
            self._dirs = self._scan_dirs()
        return list(self._dirs)

    def _scan_dirs(self) -> list[Interpreter]:
        found = []
        for root, source in self._roots():
            if not root.is_dir():
                continue
            for entry in sorted(root.iterdir()):
                python = next((entry / "bin" / n for n in ("python3", "python")
                               if (entry / "bin" / n).is_file()), None)
                if python is None or not os.access(python, os.X_OK):
                    continue
                probed = self._probe(python)
                if probed is not None:
                    found.append(Interpreter(version=probed, path=python, source=source))
        return found

    def _roots(self) -> list[tuple[pathlib.Path, str]]:
        home = pathlib.Path(self._env.get("HOME") or pathlib.Path.home())
        pyenv = pathlib.Path(self._env.get("PYENV_ROOT") or home / ".pyenv")
        roots = [(pyenv / "versions", "pyenv")]
        managed = self._env.get("UV_PYTHON_INSTALL_DIR") or self._run(self._uv, "python", "dir").strip()
        if managed:
            roots.append((pathlib.Path(managed), "uv-managed"))
        return roots

    def _probe(self, python: pathlib.Path) -> str | None:
        """The version the interpreter reports (a directory name may lie); CPython only."""
        out = self._run(str(python), "-I", "-c", _PROBE).split()
        if len(out) != 2 or out[1] != "CPython" or parse(out[0]) is None:
            return None
        return out[0]

    def _run(self, *argv: str) -> str:
        try:
            done = subprocess.run(argv, env=self._env, capture_output=True, text=True, check=False,
                                  stdin=subprocess.DEVNULL, timeout=30)
        except (OSError, subprocess.TimeoutExpired):
            return ""
        return done.stdout if done.returncode == 0 else ""


def _dedupe(found: list[Interpreter]) -> list[Interpreter]:
    """One entry per real file (a shim and ``/usr/bin/python3 -> python3.11`` are the same)."""
    seen: dict[str, Interpreter] = {}
    for interpreter in found:
        try:
            real = str(interpreter.path.resolve())
        except OSError:
            continue
        seen.setdefault(real, interpreter)
    return list(seen.values())
