"""Times of what a local attempt wrote while no server followed it.

The local executor writes an attempt's output to plain files, which keep no times: a server that
adopted an attempt after a crash used to stamp every line written meanwhile with the time it read
them (the adoption's). So while no server follows an attempt, a small sampler (``SAMPLER``, run
with the server's interpreter in ``-S -I`` mode: no site, nothing imported from the project)
appends ``time stdout_size stderr_size`` to ``WORK/times`` every ``0.1`` s while the files grow,
until the attempt's ``rc`` appears. The adopting server gives each line the time of the first
sample that saw it whole: the attempt's own time, to a tenth of a second.
"""

from __future__ import annotations

import bisect
import contextlib
import dataclasses
import pathlib

SAMPLER = """
import os, sys, time
os.setsid()  # not counted in the attempt's process group (memory limits), not killed with it
w = sys.argv[1]
def size(name):
    try:
        return os.stat(os.path.join(w, name)).st_size
    except OSError:
        return 0
last = None
with open(os.path.join(w, 'times'), 'a') as out:
    while True:
        done = os.path.exists(os.path.join(w, 'rc')) or not os.path.isdir(w)
        now = (size('stdout'), size('stderr'))
        if now != last:
            out.write('%.3f %d %d\\n' % (time.time(), now[0], now[1]))
            out.flush()
            last = now
        if done:
            break
        time.sleep(0.1)
"""


@dataclasses.dataclass(frozen=True)
class Times:
    """One stream's samples: at ``times[i]`` its file held ``sizes[i]`` bytes (both ascending)."""

    times: list[float]
    sizes: list[int]

    def first_at(self, end: int, *, default: float) -> float:
        """When the bytes up to ``end`` were first seen written (``default`` if not yet sampled)."""
        i = bisect.bisect_left(self.sizes, end)
        return self.times[i] if i < len(self.sizes) else default

    def passed(self, end: int) -> bool:
        return not self.sizes or end > self.sizes[-1]


@dataclasses.dataclass(frozen=True)
class Stamps:
    stdout: Times | None = None
    stderr: Times | None = None

    @classmethod
    def load(cls, work: pathlib.Path) -> Stamps:
        """The sampler's records in ``work`` (none when it never ran: the server never went away)."""
        rows: list[tuple[float, int, int]] = []
        with contextlib.suppress(OSError):
            for line in (work / "times").read_text().splitlines():
                parts = line.split()
                if len(parts) == 3:  # a line cut by a crash is skipped
                    with contextlib.suppress(ValueError):
                        rows.append((float(parts[0]), int(parts[1]), int(parts[2])))
        if not rows:
            return cls()
        return cls(stdout=_times(rows, 1), stderr=_times(rows, 2))


def _times(rows: list[tuple[float, int, int]], column: int) -> Times:
    times: list[float] = []
    sizes: list[int] = []
    for row in rows:
        size = int(row[column])
        if not sizes or size > sizes[-1]:
            times.append(row[0])
            sizes.append(size)
    return Times(times=times, sizes=sizes)
