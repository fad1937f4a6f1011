"""Where local attempts keep their work dirs: in memory (tmpfs) when the machine offers one.

An attempt's work dir holds a handful of small files made and deleted per attempt (its handle,
inputs, config, exit code) and its raw stdout/stderr until the result is stored. On a
journaling filesystem of a virtual machine each of those creates and unlinks cost 0.2-0.3 ms of
CPU here (tmpfs: ~5 us), several milliseconds per attempt, most of a trivial stage. So, as
systemd keeps runtime state in /run, the default work dir is on a tmpfs:

1. ``$XDG_RUNTIME_DIR/kubeline/HASH`` when that is a tmpfs owned by this user (per-user, 0700);
2. else ``/dev/shm/kubeline-UID/HASH`` when /dev/shm is a tmpfs with at least ``SHM_MIN_FREE``
   free (a container's default 64 MiB is not enough); the ``kubeline-UID`` dir is made 0700 and
   refused when another user could have made or replaced it (owner, mode, symlink);
3. else ``HOME/work`` on disk, as before.

HASH is of the data dir, so two servers of different homes never share one. Nothing there
needs to outlive a reboot: the attempts it describes are processes, gone with the machine.
What keeps tmpfs from filling with a chatty attempt's output: the tail punches out what it has
handed to the log store (``local_tail``), so only the bytes not read yet take memory.
``KUBELINE_WORK_DIR`` sets the dir explicitly.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import os
import pathlib
import stat
from collections.abc import Collection

log = logging.getLogger(__name__)

SHM_MIN_FREE = 1 << 30  # bytes free on /dev/shm to use it (Docker's and Kubernetes' default is 64 MiB)
RUNTIME_MIN_FREE = 64 << 20  # bytes free in $XDG_RUNTIME_DIR (usually 10% of RAM)


@functools.cache  # read once: asked at start-up by each local executor and the work dir's choice
def tmpfs_mounts(mounts: pathlib.Path = pathlib.Path("/proc/self/mounts")) -> frozenset[str]:
    """Mount points of tmpfs filesystems (empty when the mount table cannot be read)."""
    try:
        text = mounts.read_text()
    except OSError:
        return frozenset()
    found = set()
    for line in text.splitlines():
        fields = line.split()
        if len(fields) >= 3 and fields[2] == "tmpfs":
            found.add(fields[1].replace("\\040", " "))
    return frozenset(found)


def on_tmpfs(path: pathlib.Path, mounts: Collection[str] | None = None) -> bool:
    """Whether ``path`` lies on a tmpfs (its nearest mount point is one)."""
    mounts = tmpfs_mounts() if mounts is None else mounts
    path = pathlib.Path(os.path.realpath(path))
    for candidate in (path, *path.parents):
        if os.path.ismount(candidate):
            return str(candidate) in mounts
    return False


def _free(path: str) -> int:
    try:
        st = os.statvfs(path)
    except OSError:
        return 0
    return st.f_bavail * st.f_frsize


def _private_dir(path: pathlib.Path) -> str:
    """Make ``path`` (a dir of this user only) or say why it cannot be trusted ("" when fine)."""
    try:
        path.mkdir(mode=0o700, exist_ok=True)
        info = os.lstat(path)
    except OSError as exc:
        return f"cannot make {path}: {exc.strerror or exc}"
    if not stat.S_ISDIR(info.st_mode):
        return f"{path} is not a directory (a symlink?)"
    if info.st_uid != os.getuid():
        return f"{path} belongs to uid {info.st_uid}, not this user"
    if stat.S_IMODE(info.st_mode) & 0o077:
        return f"{path} is open to other users (mode {stat.S_IMODE(info.st_mode):o})"
    return ""


def default_work_dir(home: pathlib.Path, *, environ: dict[str, str] | None = None,
                     shm: pathlib.Path = pathlib.Path("/dev/shm"),  # noqa: S108 - checked: _private_dir
                     mounts: Collection[str] | None = None) -> pathlib.Path:
    """The work dir for the data dir ``home`` when none is configured (see the module doc)."""
    environ = dict(os.environ) if environ is None else environ
    mounts = tmpfs_mounts() if mounts is None else mounts
    digest = hashlib.sha256(str(home.expanduser().resolve()).encode()).hexdigest()[:16]
    candidates = []  # this user's private dirs on a tmpfs, made if need be
    runtime = environ.get("XDG_RUNTIME_DIR", "")
    if runtime and pathlib.Path(runtime).is_absolute() and on_tmpfs(pathlib.Path(runtime), mounts) \
            and _free(runtime) >= RUNTIME_MIN_FREE:
        candidates.append(pathlib.Path(runtime) / "kubeline")
    if on_tmpfs(shm, mounts) and _free(str(shm)) >= SHM_MIN_FREE:
        candidates.append(shm / f"kubeline-{os.getuid()}")
    for base in candidates:
        why = _private_dir(base)
        if not why:
            return base / digest
        log.warning("attempt work dirs cannot go to %s: %s", base, why)
    return home / "work"
