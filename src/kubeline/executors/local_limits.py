"""Resource limits and "kill everything it started" for local attempts.

Preferred, for attempts with a limit: a per-attempt cgroup (v1 ``memory`` and, for a CPU
limit, ``cpu`` controller, made under Kubeline's own cgroup). The kernel then enforces the
memory limit (OOM kill, recorded in ``memory.oom_control``), ``cpu.cfs_quota_us`` caps the CPU,
and ``cgroup.procs`` lists every process of the attempt, including a daemon that ``setsid``-ed
itself out of the process group, so it is killed when the attempt ends. Attempts without
limits get no cgroup: measured here, a fresh memory cgroup adds ~15 ms to a short process (the
mkdir is 0.2 ms; the rest is charging and offlining), which would triple a chain of tiny
stages. For them, leftovers are found by the process group and by ``KUBELINE_ATTEMPT_ID`` in
``/proc/<pid>/environ``, which also catches ``setsid`` daemons unless they exec with a scrubbed
environment. Reading every process's environ costs ~1 ms per 100 processes, so a recent attempt
only looks at the pids allocated since its supervisor started (``kill_marked(first_pid=)``);
the executor runs this scan just after it has reported the attempt's result, one scan for the
attempts whose cleanups go to the cleanup thread together (``kill_all_marked``).

Fallback (no writable cgroup, e.g. an unprivileged container): a watchdog sums the RSS of the
attempt's process group from ``/proc`` every 100 ms and kills the group above the limit; CPU
limits are then not enforced (``Capabilities.cpu_limit`` is False) and a process that leaves the
process group (``setsid``) survives the attempt. RLIMIT_AS is not used: it counts virtual
memory, which breaks normal programs (thread stacks, JITs, numpy) long before RSS is high.
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import os
import pathlib
import re
import signal
import uuid
from collections.abc import Iterable, Mapping
from typing import Any

_PAGE = os.sysconf("SC_PAGE_SIZE")
_CPU_PERIOD_US = 100_000
_LAST_PID = "/proc/sys/kernel/ns_last_pid"  # of the reader's pid namespace, like our pids
_PID_MAX = "/proc/sys/kernel/pid_max"
_DIRECT_SCAN_MAX = 512  # pids in the span above which listing /proc is cheaper
_MAX_SCANS = 3
_MARKER = b"\0KUBELINE_ATTEMPT_ID="


@dataclasses.dataclass(frozen=True, kw_only=True)
class CgroupRoots:
    """Where this process may create per-attempt cgroups (None = controller not usable)."""

    memory: pathlib.Path | None = None
    cpu: pathlib.Path | None = None

    @classmethod
    def probe(cls) -> CgroupRoots:
        return cls(memory=_probe("memory"), cpu=_probe("cpu"))


@dataclasses.dataclass(frozen=True, kw_only=True)
class AttemptCgroups:
    memory: pathlib.Path | None = None
    cpu: pathlib.Path | None = None

    @classmethod
    def create(cls, roots: CgroupRoots, *, name: str, memory_bytes: int | None,
               cpu_cores: float | None) -> AttemptCgroups:
        memory = cpu = None
        if roots.memory is not None and (memory_bytes is not None or cpu_cores is not None):
            memory = _make(roots.memory / name)
            if memory is not None and memory_bytes is not None:
                _write(memory / "memory.limit_in_bytes", str(memory_bytes))
                with contextlib.suppress(OSError):  # no swap accounting: limit is RAM only
                    _write(memory / "memory.memsw.limit_in_bytes", str(memory_bytes))
                with contextlib.suppress(OSError):
                    _write(memory / "memory.swappiness", "0")
        if roots.cpu is not None and cpu_cores is not None:
            cpu = _make(roots.cpu / name)
            if cpu is not None:
                _write(cpu / "cpu.cfs_period_us", str(_CPU_PERIOD_US))
                _write(cpu / "cpu.cfs_quota_us", str(max(1000, int(cpu_cores * _CPU_PERIOD_US))))
        return cls(memory=memory, cpu=cpu)

    def to_json(self) -> dict[str, Any]:
        return {"memory": str(self.memory) if self.memory else None,
                "cpu": str(self.cpu) if self.cpu else None}

    @classmethod
    def from_json(cls, data: dict[str, Any] | None) -> AttemptCgroups:
        data = data or {}
        return cls(memory=pathlib.Path(data["memory"]) if data.get("memory") else None,
                   cpu=pathlib.Path(data["cpu"]) if data.get("cpu") else None)

    def join_files(self) -> tuple[str, str]:
        """``cgroup.procs`` paths the wrapper shell writes its pid to ('' = none)."""
        return (str(self.memory / "cgroup.procs") if self.memory else "",
                str(self.cpu / "cgroup.procs") if self.cpu else "")

    def pids(self) -> set[int]:
        found: set[int] = set()
        for group in (self.memory, self.cpu):
            if group is not None:
                with contextlib.suppress(OSError, ValueError):
                    found.update(int(p) for p in (group / "cgroup.procs").read_text().split())
        return found

    def oom_killed(self) -> bool:
        if self.memory is None:
            return False
        try:
            control = (self.memory / "memory.oom_control").read_text()
        except OSError:
            return False
        match = re.search(r"^oom_kill (\d+)$", control, re.MULTILINE)
        return bool(match and int(match.group(1)) > 0)

    def memory_usage(self) -> int | None:
        """Resident memory of the attempt (rss of ``memory.stat``; page cache not counted)."""
        if self.memory is None:
            return None
        try:
            stat = (self.memory / "memory.stat").read_text()
        except OSError:
            return None
        match = re.search(r"^total_rss (\d+)$", stat, re.MULTILINE)
        return int(match.group(1)) if match else None

    def signal_all(self, sig: int) -> int:
        pids = self.pids()
        for pid in pids:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, sig)
        return len(pids)

    def remove(self) -> bool:
        """Remove the cgroups; False while processes are still in them (retry later)."""
        done = True
        for group in (self.memory, self.cpu):
            if group is not None and group.exists():
                try:
                    group.rmdir()
                except OSError:
                    done = False
        return done


def group_pids(pgid: int) -> list[int]:
    """Processes of a process group, from ``/proc`` (the fallback when there is no cgroup)."""
    found = []
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            stat = _stat_fields(int(entry.name))
            if stat is not None and int(stat[2]) == pgid:
                found.append(int(entry.name))
    return found


def rss_bytes(pids: list[int] | set[int]) -> int:
    total = 0
    for pid in pids:
        stat = _stat_fields(pid)
        if stat is not None:
            total += int(stat[21]) * _PAGE
    return total


def cpu_ticks(pids: list[int] | set[int]) -> int:
    total = 0
    for pid in pids:
        stat = _stat_fields(pid)
        if stat is not None:
            total += int(stat[11]) + int(stat[12])
    return total


def start_ticks(pid: int) -> int | None:
    """The process start time (clock ticks since boot): with the pid it names one process."""
    stat = _stat_fields(pid)
    return int(stat[19]) if stat is not None else None


def is_running(pid: int, *, started: int | None) -> bool:
    stat = _stat_fields(pid)
    if stat is None or stat[0] in ("Z", "X"):
        return False
    return started is None or int(stat[19]) == started


def exit_status(pid: int, *, started: int | None) -> int | None:
    """The wait status of ``pid`` while it is a zombie (ended, not reaped yet), from the exit
    code ``/proc/PID/stat`` shows for it (Linux 3.5+); None when it runs or is gone."""
    stat = _stat_fields(pid)
    if stat is None or stat[0] != "Z" or len(stat) < 50:
        return None
    if started is not None and int(stat[19]) != started:
        return None
    return int(stat[49])


def kill_marked(attempt_id: str, *, first_pid: int | None = None) -> int:
    """SIGKILL every process whose initial environment names this attempt (see module doc).

    With ``first_pid`` (the attempt's first process, started moments ago) only the pids handed
    out since then are looked at: a process the attempt started got one of them, so a short
    attempt costs a handful of ``open`` calls instead of one per process on the machine. Scans
    repeat while they find something, since a daemon may fork between a scan and its kill.
    """
    return kill_all_marked({attempt_id: first_pid})


def kill_all_marked(attempts: Mapping[str, int | None]) -> int:
    """``kill_marked`` for several attempts (id -> first pid) in one scan: each process's
    environment is read once for all of them. A fan-out's attempts end together and each one's
    pids are the others' too: one scan per attempt read n environments n times."""
    if not attempts:
        return 0
    wanted = {attempt_id.encode() for attempt_id in attempts}
    first = _earliest(list(attempts.values()))
    killed = {os.getpid()}
    for _ in range(_MAX_SCANS):
        found = 0
        for pid in _pids_since(first):
            if pid in killed:
                continue
            try:
                with open(f"/proc/{pid}/environ", "rb") as file:  # noqa: PTH123 - hot path
                    environ = b"\0" + file.read() + b"\0"
            except OSError:
                continue
            if _marker_of(environ) in wanted:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGKILL)
                    killed.add(pid)
                    found += 1
        if not found:
            break
    return len(killed) - 1


def _earliest(firsts: list[int | None]) -> int | None:
    """The first pid handed out of ``firsts`` (pids wrap at ``pid_max``); None: scan them all."""
    last, pid_max = _read_int(_LAST_PID), _read_int(_PID_MAX)
    if None in firsts or last is None or pid_max is None:
        return None
    return max((f for f in firsts if f is not None), key=lambda f: (last - f) % pid_max)


def _marker_of(environ: bytes) -> bytes | None:
    start = environ.find(_MARKER)
    if start < 0:
        return None
    start += len(_MARKER)
    return environ[start:environ.index(b"\0", start)]


def is_marked(pid: int, attempt_id: str) -> bool:
    """Whether process ``pid`` started with this attempt's environment marker."""
    marker = f"\0KUBELINE_ATTEMPT_ID={attempt_id}\0".encode()
    try:
        with open(f"/proc/{pid}/environ", "rb") as file:  # noqa: PTH123 - same as kill_marked
            return marker in b"\0" + file.read() + b"\0"
    except OSError:
        return False


def marked_leader(attempt_id: str) -> int | None:
    """The pid of the live session leader marked with this attempt (its supervisor), if any: a
    scan of every process, for the rare recovery of an attempt whose pid nobody wrote down."""
    for pid in _all_pids():
        fields = _stat_fields(pid)
        # stat after the name: state ppid pgrp session ...
        if fields is not None and fields[0] not in ("Z", "X") and fields[3] == str(pid) \
                and is_marked(pid, attempt_id):
            return pid
    return None


def _pids_since(first: int | None) -> Iterable[int]:
    """Pids allocated since ``first`` (every process when unknown or wrapped too far)."""
    last = _read_int(_LAST_PID)
    pid_max = _read_int(_PID_MAX)
    if first is None or last is None or pid_max is None:
        return _all_pids()
    spans = [range(first, last + 1)] if last >= first else \
        [range(first, pid_max + 1), range(1, last + 1)]
    if sum(len(span) for span in spans) > _DIRECT_SCAN_MAX:
        return (pid for pid in _all_pids() if any(pid in span for span in spans))
    return itertools.chain.from_iterable(spans)


def _all_pids() -> list[int]:
    return [int(entry.name) for entry in os.scandir("/proc") if entry.name.isdigit()]


def _read_int(path: str) -> int | None:
    try:
        with open(path, "rb") as file:  # noqa: PTH123 - hot path
            return int(file.read())
    except (OSError, ValueError):
        return None


def kill_group(pgid: int, sig: int = signal.SIGKILL) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def _stat_fields(pid: int) -> list[str] | None:
    """Fields of ``/proc/<pid>/stat`` after the command name (index 0 = state)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as file:  # noqa: PTH123 - hot path, no Path object
            data = file.read()
    except OSError:
        return None
    return data[data.rfind(b")") + 2:].decode().split()


def _probe(controller: str) -> pathlib.Path | None:
    mount = _mount_point(controller)
    if mount is None:
        return None
    own = _own_path(controller)
    base = mount / own.lstrip("/") if own and (mount / own.lstrip("/")).is_dir() else mount
    root = base / "kubeline"
    try:
        root.mkdir(exist_ok=True)
        probe = root / f"probe-{uuid.uuid4().hex[:8]}"
        probe.mkdir()
        probe.rmdir()
    except OSError:
        return None
    return root


def _mount_point(controller: str) -> pathlib.Path | None:
    try:
        mounts = pathlib.Path("/proc/self/mounts").read_text().splitlines()
    except OSError:
        return None
    for line in mounts:
        parts = line.split()
        if len(parts) >= 4 and parts[2] == "cgroup" and controller in parts[3].split(","):
            return pathlib.Path(parts[1])
    return None


def _own_path(controller: str) -> str | None:
    with contextlib.suppress(OSError):
        for line in pathlib.Path("/proc/self/cgroup").read_text().splitlines():
            _, controllers, path = line.split(":", 2)
            if controller in controllers.split(","):
                return path
    return None


def _make(path: pathlib.Path) -> pathlib.Path | None:
    try:
        path.mkdir()
    except FileExistsError:
        pass
    except OSError:
        return None
    return path


def _write(path: pathlib.Path, value: str) -> None:
    with path.open("w") as file:
        file.write(value)
