"""CPU time and peak memory of local attempts, kept beside their artifacts.

The supervisor of an attempt is the executor's own child, so when it is reaped ``wait4`` hands
over the kernel's resource usage of it and every process it waited for: the user code's CPU
time (user + system) and the peak resident memory of the largest of them. That is written next
to the attempt's artifacts folder (``<artifacts>/<run>/<stage>/<n>.usage.json``: not inside it,
which belongs to the stage), so the numbers outlive the process and this server's memory, and
retention removes them with the run's artifacts. While the attempt runs, its processes are read
from ``/proc`` instead (current memory, CPU time so far). An attempt adopted after a restart is
not our child: it has no final numbers, and the answer says so.
"""

from __future__ import annotations

import contextlib
import json
import os
import pathlib
import resource
from typing import Any

_CLK_TCK = os.sysconf("SC_CLK_TCK")
NOT_MEASURED = ("metrics unavailable: no usage was recorded for this attempt (it is recorded when the "
                "server that started an attempt sees it end; not for warm-pool or adopted attempts)")


def path_of(handle: dict[str, Any]) -> pathlib.Path | None:
    folder = handle.get("artifacts_dir")
    return pathlib.Path(f"{folder}.usage.json") if folder else None


def record(handle: dict[str, Any], usage: resource.struct_rusage) -> None:
    """Write the final numbers (never raises: they are a nicety, the attempt's result is not)."""
    path = path_of(handle)
    if path is None:
        return
    body = {"cpu_seconds": round(usage.ru_utime + usage.ru_stime, 3),
            "peak_memory_bytes": int(usage.ru_maxrss) * 1024}  # Linux: kilobytes
    with contextlib.suppress(OSError):
        path.write_text(json.dumps(body))


def report(handle: dict[str, Any], *, live: tuple[int, int] | None) -> dict[str, Any]:
    """The API's ``resources``: ``live`` is (rss bytes, cpu ticks) of a running attempt's processes."""
    if live is not None:
        rss, ticks = live
        return {"available": True, "reason": "", "cpu_cores": None, "cpu_seconds": round(ticks / _CLK_TCK, 3),
                "memory_bytes": rss, "peak_memory_bytes": None}
    path = path_of(handle)
    try:
        found = json.loads(path.read_text()) if path is not None else None
    except (OSError, ValueError):
        found = None
    if not isinstance(found, dict):
        return {"available": False, "reason": NOT_MEASURED, "cpu_cores": None, "cpu_seconds": None,
                "memory_bytes": None, "peak_memory_bytes": None}
    return {"available": True, "reason": "", "cpu_cores": None, "cpu_seconds": found.get("cpu_seconds"),
            "memory_bytes": None, "peak_memory_bytes": found.get("peak_memory_bytes")}
