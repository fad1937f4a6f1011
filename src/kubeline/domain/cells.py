"""Per-cell progress of a notebook stage: the log lines the runner writes, and reading them back.

The notebook runner (``components.notebook``) runs inside the pipeline's virtualenv and may run
on any executor (a local process, a container, a pod), so the only channel every executor keeps
is the attempt's log. The runner writes one line per cell event in the format below and the API
rebuilds each cell's status from the stored log: no extra upload, no table to keep in step, and
the status of an attempt that was killed mid-cell is still there. The runner is copied alone into
user venvs, so it writes the format itself (``label`` below is the same text); a test runs the
runner and parses its log, so the two cannot drift unnoticed.

Cells are numbered as Fast-Flow numbers them: ``cells[i]`` is the *i*-th **code** cell of the
notebook (0-based; markdown cells and the parameters cell papermill injects are not counted)::

    cell 2/3 (cells[1]) started
    cell 2/3 (cells[1]) failed in 0.1s: ValueError: x; retrying in 1s
    cell 2/3 (cells[1]) started (retry 1/2)
    cell 2/3 (cells[1]) done in 0.2s
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable

_LINE = re.compile(
    r"^cell (?P<pos>\d+)/(?P<total>\d+) \(cells\[(?P<index>\d+)\]\) "
    r"(?P<event>started|done|failed)(?P<rest>.*)$"
)
_TOOK = re.compile(r"^ in (?P<took>\d+(?:\.\d+)?)s(?::\s?(?P<error>.*))?$")
_RETRYING = re.compile(r"; retrying in [\d.]+s$")

PENDING, RUNNING, SUCCEEDED, FAILED, RETRYING = "pending", "running", "succeeded", "failed", "retrying"
SKIPPED, INTERRUPTED = "skipped", "interrupted"


def label(*, index: int, total: int) -> str:
    """``cell 2/3 (cells[1])``: position for people, ``cells[i]`` for the policy it uses."""
    return f"cell {index + 1}/{total} (cells[{index}])"


@dataclasses.dataclass(frozen=True, kw_only=True)
class CellStatus:
    index: int  # the code-cell index: ``cells[index]`` in pipeline.json
    state: str
    tries: int = 0  # executions started (1 + retries used)
    duration: float | None = None  # seconds of the last execution that ended
    error: str = ""  # the last failure's ``ExceptionType: message``


@dataclasses.dataclass
class _Seen:
    state: str = PENDING
    tries: int = 0
    duration: float | None = None
    error: str = ""


def parse(lines: Iterable[str], *, finished: bool) -> list[CellStatus]:
    """Every code cell's status from an attempt's stdout lines, in notebook order.

    ``finished``: the attempt has ended, so a cell still marked running was interrupted (killed,
    timed out) and cells never started were skipped; while it runs they are running / pending.
    """
    total = 0
    found: dict[int, _Seen] = {}
    for text in lines:
        match = _LINE.match(text)
        if match is None:
            continue
        total = max(total, int(match["total"]))
        seen = found.setdefault(int(match["index"]), _Seen())
        event, rest = match["event"], match["rest"]
        if event == "started":
            seen.state, seen.tries = RUNNING, seen.tries + 1
            continue
        took = _TOOK.match(rest)
        if took is not None:
            seen.duration = float(took["took"])
        if event == "done":
            seen.state = SUCCEEDED
            continue
        error = (took["error"] or "") if took else rest.strip()
        retrying = _RETRYING.search(error)
        seen.state = RETRYING if retrying else FAILED
        seen.error = error[: retrying.start()] if retrying else error
    result = []
    for index in range(max(total, max(found, default=-1) + 1)):
        cell = found.get(index)
        if cell is None:
            result.append(CellStatus(index=index, state=SKIPPED if finished else PENDING))
            continue
        state = INTERRUPTED if finished and cell.state in (RUNNING, RETRYING) else cell.state
        result.append(CellStatus(index=index, state=state, tries=cell.tries, duration=cell.duration,
                                 error=cell.error))
    return result
