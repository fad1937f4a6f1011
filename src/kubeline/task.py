"""The helper a stage's own code uses to talk to Kubeline: inputs in, outputs and a route out.

Kubeline runs every attempt as a process with a few environment variables (see the table
below); this module turns them into one-line calls::

    from kubeline import task

    day = task.input("day", default="today")
    task.set_output("rows", 42)
    task.set_route("big" if rows > 1000 else "small")

It is copied into each pipeline's own virtualenv, where none of Kubeline's dependencies are
installed, so it imports only the standard library.

==========================  =====================================================
``KUBELINE_INPUTS``         JSON file: the stage's rendered inputs (an object)
``KUBELINE_CONFIG``         JSON file: the stage's rendered ``config`` (an object)
``KUBELINE_OUTPUTS``        JSON file the stage writes its outputs (an object) to
``KUBELINE_ROUTE_FILE``     file the stage writes the name of its route to
``KUBELINE_ARTIFACTS_DIR``  directory kept after the attempt (reports, notebooks)
``KUBELINE_RUN_ID``, ``KUBELINE_PIPELINE``, ``KUBELINE_STAGE``, ``KUBELINE_ATTEMPT``
==========================  =====================================================

Outside Kubeline (a plain ``python main.py`` while developing) every call still works:
``inputs()`` and ``config()`` are empty, outputs and the route are checked but kept only in
memory (``outputs()`` shows them) with a one-time warning on stderr, ``artifacts_dir()`` is a
fresh temporary directory, ``run_id()`` is ``"local"``, ``pipeline()`` the name of the current
directory, ``stage()`` is ``"main"`` and ``attempt()`` is 1.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import pathlib
import sys
import tempfile
import threading
from collections.abc import Iterator, Mapping
from typing import Any, Final

__all__ = [
    "artifacts_dir",
    "attempt",
    "config",
    "in_kubeline",
    "input",
    "inputs",
    "outputs",
    "pipeline",
    "run_id",
    "set_output",
    "set_outputs",
    "set_route",
    "stage",
]

INPUTS_ENV: Final = "KUBELINE_INPUTS"
CONFIG_ENV: Final = "KUBELINE_CONFIG"
OUTPUTS_ENV: Final = "KUBELINE_OUTPUTS"
ROUTE_ENV: Final = "KUBELINE_ROUTE_FILE"
ARTIFACTS_ENV: Final = "KUBELINE_ARTIFACTS_DIR"
RUN_ID_ENV: Final = "KUBELINE_RUN_ID"
PIPELINE_ENV: Final = "KUBELINE_PIPELINE"
STAGE_ENV: Final = "KUBELINE_STAGE"
ATTEMPT_ENV: Final = "KUBELINE_ATTEMPT"


class _Missing:
    def __repr__(self) -> str:
        return "<required>"


_MISSING: Final = _Missing()
_lock = threading.Lock()
_local_outputs: dict[str, Any] = {}
_local_route: list[str] = []
_warned: set[str] = set()
_local_artifacts: list[pathlib.Path] = []


def in_kubeline() -> bool:
    """True when this process was started by Kubeline (its outputs are collected)."""
    return bool(os.environ.get(OUTPUTS_ENV))


def inputs() -> dict[str, Any]:
    """The stage's inputs: a fresh copy of the JSON object in ``$KUBELINE_INPUTS`` ({} outside)."""
    return _read_object(INPUTS_ENV, what="inputs")


def input(name: str, default: Any = _MISSING) -> Any:
    """One input by name; ``default`` when it is absent, else a ``KeyError`` listing the inputs."""
    values = inputs()
    if name in values:
        return values[name]
    if default is _MISSING:
        known = ", ".join(sorted(values)) or "none"
        raise KeyError(
            f"kubeline.task: input {name!r} was not given (inputs: {known}); map it in the stage's"
            f" 'inputs:' or pass a default: task.input({name!r}, default=...)"
        )
    return default


def config() -> dict[str, Any]:
    """The stage's rendered ``config`` from ``$KUBELINE_CONFIG`` ({} outside Kubeline)."""
    return _read_object(CONFIG_ENV, what="config")


def set_output(key: str, value: Any) -> None:
    """Record one output; later stages read it as ``${stages.THIS.outputs.KEY}``."""
    set_outputs({key: value})


def set_outputs(mapping: Mapping[str, Any]) -> None:
    """Merge ``mapping`` into this attempt's outputs (the file is replaced atomically).

    Values must be JSON: dicts with string keys, lists, strings, finite numbers, booleans, None.
    Anything else raises ``TypeError`` (``ValueError`` for NaN/infinity) naming the key.
    """
    checked = {key: _json_value(key, value) for key, value in _items(mapping)}
    path = os.environ.get(OUTPUTS_ENV)
    with _lock:
        if not path:
            _warn_once(OUTPUTS_ENV, "outputs are kept in memory only (task.outputs() shows them)")
            _local_outputs.update(checked)
            return
        with _file_lock(pathlib.Path(path)):
            current = _load_outputs(pathlib.Path(path))
            current.update(checked)
            _write_atomically(pathlib.Path(path), json.dumps(current, allow_nan=False))


def outputs() -> dict[str, Any]:
    """The outputs recorded so far by this attempt (all processes of it, not only this one)."""
    path = os.environ.get(OUTPUTS_ENV)
    with _lock:
        return _load_outputs(pathlib.Path(path)) if path else dict(_local_outputs)


def set_route(name: str) -> None:
    """Select the route downstream triggers filter on (``downstream: [{route: NAME}]``)."""
    if not isinstance(name, str) or not name.strip() or "\n" in name:
        raise ValueError(
            f"kubeline.task.set_route: a route is a non-empty one-line string, not {name!r}"
        )
    path = os.environ.get(ROUTE_ENV)
    if not path:
        _warn_once(ROUTE_ENV, f"route {name!r} is not recorded")
        _local_route[:] = [name]
        return
    _write_atomically(pathlib.Path(path), name.strip())


NOTIFY_PREFIX = "::kubeline-notify::"


def notify(text: str) -> None:
    """Send ``text`` to the pipeline's notification channels (and the global ones).

    It is one line on stdout that Kubeline picks up from the attempt's log when the run ends, so
    it works on every executor and never blocks or fails the script; secrets are masked as in
    the rest of the log."""
    if not isinstance(text, str) or not text.strip():
        raise ValueError("task.notify needs a non-empty message")
    print(NOTIFY_PREFIX + json.dumps({"text": " ".join(text.split())[:2000]}), flush=True)


def artifacts_dir() -> pathlib.Path:
    """A directory whose files Kubeline keeps with the attempt (a temporary one outside)."""
    given = os.environ.get(ARTIFACTS_ENV)
    if given:
        path = pathlib.Path(given)
        path.mkdir(parents=True, exist_ok=True)
        return path
    with _lock:
        if not _local_artifacts:
            _local_artifacts.append(pathlib.Path(tempfile.mkdtemp(prefix="kubeline-artifacts-")))
            _warn_once(ARTIFACTS_ENV, f"artifacts go to {_local_artifacts[0]}")
        return _local_artifacts[0]


def run_id() -> str:
    """The id of the run this attempt belongs to (``"local"`` outside Kubeline)."""
    return os.environ.get(RUN_ID_ENV) or "local"


def pipeline() -> str:
    """The pipeline's name (the current directory's name outside Kubeline)."""
    return os.environ.get(PIPELINE_ENV) or pathlib.Path.cwd().name


def stage() -> str:
    """The stage id (``"main"`` outside Kubeline, like a folder with only main.py)."""
    return os.environ.get(STAGE_ENV) or "main"


def attempt() -> int:
    """This attempt's number: 1 for the first try, 2 for the first retry, ..."""
    raw = os.environ.get(ATTEMPT_ENV)
    if not raw:
        return 1
    try:
        return int(raw)
    except ValueError:
        raise RuntimeError(f"kubeline.task: {ATTEMPT_ENV}={raw!r} is not a number") from None


def _read_object(variable: str, *, what: str) -> dict[str, Any]:
    path = os.environ.get(variable)
    if not path:
        return {}
    try:
        text = pathlib.Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise RuntimeError(
            f"kubeline.task: cannot read the stage {what} from {path}: {exc}"
        ) from None
    try:
        value = json.loads(text) if text.strip() else {}
    except json.JSONDecodeError as exc:
        raise RuntimeError(f"kubeline.task: {path} ({variable}) is not JSON: {exc}") from None
    if not isinstance(value, dict):
        raise RuntimeError(
            f"kubeline.task: {path} ({variable}) holds a {type(value).__name__}, not an object"
        )
    return value


def _items(mapping: Mapping[str, Any]) -> Iterator[tuple[str, Any]]:
    if not isinstance(mapping, Mapping):
        raise TypeError(
            "kubeline.task.set_outputs takes a mapping of name -> value,"
            f" not {type(mapping).__name__}"
        )
    for key, value in mapping.items():
        if not isinstance(key, str) or not key:
            raise TypeError(f"kubeline.task: output names are non-empty strings, not {key!r}")
        yield key, value


def _json_value(key: str, value: Any) -> Any:
    """``value`` as JSON would give it back (tuples become lists), or an error naming ``key``."""
    try:
        return json.loads(json.dumps(value, allow_nan=False))
    except TypeError as exc:
        raise TypeError(
            f"kubeline.task: output {key!r} is not JSON-serialisable ({exc}); convert it to"
            " dicts/lists/strings/numbers first, or save it as a file in task.artifacts_dir()"
        ) from None
    except ValueError as exc:
        if _has_non_finite(value):
            raise ValueError(
                f"kubeline.task: output {key!r} contains NaN or infinity, which JSON cannot hold;"
                " replace them (e.g. with None) first"
            ) from None
        raise TypeError(f"kubeline.task: output {key!r} is not JSON-serialisable ({exc})") from None


def _has_non_finite(value: Any) -> bool:
    if isinstance(value, float):
        return not math.isfinite(value)
    if isinstance(value, dict):
        return any(_has_non_finite(v) for v in value.values())
    if isinstance(value, list | tuple):
        return any(_has_non_finite(v) for v in value)
    return False


def _load_outputs(path: pathlib.Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    if not text.strip():
        return {}
    value = json.loads(text)
    if not isinstance(value, dict):
        raise RuntimeError(
            f"kubeline.task: {path} ({OUTPUTS_ENV}) holds a {type(value).__name__}, not an object"
        )
    return value


def _write_atomically(path: pathlib.Path, text: str) -> None:
    """Write beside the target and rename over it, so a reader never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        pathlib.Path(temporary).replace(path)
    except BaseException:
        pathlib.Path(temporary).unlink(missing_ok=True)
        raise


@contextlib.contextmanager
def _file_lock(path: pathlib.Path) -> Iterator[None]:
    """Serialise read-merge-write across processes of one attempt (a notebook kernel, a pool)."""
    try:
        import fcntl
    except ImportError:  # Windows: the in-process lock is all there is
        yield
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.with_name(f".{path.name}.lock").open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _warn_once(variable: str, consequence: str) -> None:
    if variable in _warned:
        return
    _warned.add(variable)
    print(
        f"kubeline.task: {variable} is not set (not running under Kubeline): {consequence}",
        file=sys.stderr,
    )
