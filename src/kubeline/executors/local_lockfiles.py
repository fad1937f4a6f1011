"""``requirements.txt.lock``: what makes a lock file exact, and what uv says is missing from one.

Fast-Flow ships ``requirements.txt.lock`` (``uv pip compile`` output) beside
``requirements.txt``, and the lock wins. Installing it "exactly" means ``uv pip sync``: no
resolution, so every line must pin one version (``name==1.2.3``, or a direct reference
``name @ URL``), and every dependency must be listed; ``uv pip sync --strict`` reports one that is
not ("The package `a` requires `b>=1`, but it's not installed"), and those lines become the
reason the environment failed.
"""

from __future__ import annotations

import re

_MISSING = re.compile(r"The package `([^`]+)` requires `([^`]+)`, but it's not installed")
_PINNED = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*(\[[^\]]*\])?\s*===?\s*[^\s,;]+\s*(;.*)?$")


def unpinned_lines(text: str) -> list[tuple[int, str]]:
    """Requirement lines (1-based number, text) that do not pin exactly one version.

    Options (``--find-links``, ``-i``, ``--hash`` continuations), comments and blank lines are
    not requirements; ``-r``/``-e`` lines count as unpinned (a lock includes nothing else)."""
    found = []
    continued = False
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.split(" #", 1)[0].strip() if not raw.lstrip().startswith("#") else ""
        was_continued, continued = continued, line.endswith("\\")
        line = line.rstrip("\\").strip()
        if not line or was_continued:
            continue
        if line.startswith(("-r", "--requirement", "-c", "--constraint", "-e", "--editable")):
            found.append((number, line))
        elif line.startswith("-") or " @ " in line or _PINNED.match(line.split(" --hash", 1)[0].strip()):
            continue
        else:
            found.append((number, line))
    return found


def missing_dependencies(stderr: str) -> list[str]:
    """``a requires b>=1, which the lock does not list`` for every warning of ``uv pip sync --strict``."""
    return [f"{package} requires {requirement}, which the lock does not list"
            for package, requirement in _MISSING.findall(stderr)]
