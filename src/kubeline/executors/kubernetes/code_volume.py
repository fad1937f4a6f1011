"""Pipeline folders too large for a ConfigMap, copied onto a volume the attempt pods mount.

The Fast-Flow layout: one shared PVC (``KUBELINE_KUBERNETES_CODE_CLAIM``), which this server
sees mounted at ``KUBELINE_KUBERNETES_CODE_DIR``, holds the uv cache (``uv-cache/``) and copies
of pipeline folders::

    pipelines/<pipeline>/<content hash>/   one copy per content; pods mount it read-only
    pipelines/<pipeline>/.tmp-*/           a copy being written (or left by a crash)

The copy is content-addressed, so an unchanged folder is copied once and every attempt of it
(on any replica) mounts the same directory; a changed folder gets a new directory and running
pods keep theirs. It is written into a temp dir on the same volume and renamed into place, so
a pod never sees half a copy, and two replicas copying the same content at once both end with
one complete directory. The same files travel as in a bundle (``bundles.entries``).

Old copies are pruned when a pipeline is published: a copy is kept while it was used in the
last ``KEEP_SECONDS`` (its mtime is touched at each use) or is among the newest ``KEEP_NEWEST``;
temp dirs older than ``STALE_TMP_SECONDS`` are leftovers of a crash and removed.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import pathlib
import re
import shutil
import tempfile
import time

from kubeline.domain import errors
from kubeline.executors.kubernetes import bundles

PIPELINES = "pipelines"
UV_CACHE = "uv-cache"
KEEP_SECONDS = 24 * 3600.0
KEEP_NEWEST = 3
STALE_TMP_SECONDS = 3600.0
_TMP_PREFIX = ".tmp-"
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")


def safe_name(pipeline: str) -> str:
    """A directory name for a pipeline (names are already K8s-like; this guards the rest)."""
    return _UNSAFE.sub("_", pipeline).lstrip(".")[:100] or "_"


def content_hash(items: list[bundles.Entry]) -> str:
    """SHA-256 over relative paths, kinds, modes and contents (or link targets), in order."""
    digest = hashlib.sha256()
    for entry in items:
        digest.update(f"{entry.kind}\0{entry.rel}\0{entry.mode:o}\0{entry.link}\0".encode())
        if entry.kind == "file":
            with entry.path.open("rb") as handle:
                while chunk := handle.read(1 << 20):
                    digest.update(chunk)
            digest.update(b"\0")
    return digest.hexdigest()[:32]


def check_root(root: pathlib.Path) -> None:
    """``ExecutorError`` naming the path unless ``root`` is a writable directory."""
    if not root.is_dir():
        raise errors.ExecutorError(
            f"the code dir {root} (KUBELINE_KUBERNETES_CODE_DIR) is not a directory here: mount the "
            "PVC named by KUBELINE_KUBERNETES_CODE_CLAIM there, or correct the setting")
    if not os.access(root, os.W_OK | os.X_OK):
        raise errors.ExecutorError(
            f"the code dir {root} (KUBELINE_KUBERNETES_CODE_DIR) is not writable by this server "
            f"(uid {os.getuid()}): give it write access to the volume (e.g. fsGroup), or correct the setting")


def publish(folder: pathlib.Path, *, root: pathlib.Path, pipeline: str, now: float | None = None) -> str:
    """Copy ``folder`` to ``root`` (unless that content is there), mark it used, prune old
    copies; returns its path relative to ``root`` (the pods' ``subPath``)."""
    check_root(root)
    items = bundles.entries(folder)
    parent = root / PIPELINES / safe_name(pipeline)
    target = parent / content_hash(items)
    now = time.time() if now is None else now
    try:
        try:
            os.utime(target, (now, now))  # reuse: touching it also tells pruning it is in use
        except FileNotFoundError:
            parent.mkdir(parents=True, exist_ok=True)
            _copy(items, parent=parent, target=target)
            os.utime(target, (now, now))
        prune(parent, now=now, keep=target.name)
    except OSError as exc:
        raise errors.ExecutorError(
            f"cannot copy pipeline folder {folder} to the code dir {root}: {exc.strerror or exc}") from None
    return target.relative_to(root).as_posix()


def ensure_uv_cache(root: pathlib.Path) -> None:
    """Create ``uv-cache/`` so the kubelet need not (it would make it root-owned, unwritable to pods)."""
    check_root(root)
    (root / UV_CACHE).mkdir(exist_ok=True)


def _copy(items: list[bundles.Entry], *, parent: pathlib.Path, target: pathlib.Path) -> None:
    temp = pathlib.Path(tempfile.mkdtemp(prefix=_TMP_PREFIX, dir=parent))
    try:
        for entry in items:
            path = temp / entry.rel
            if entry.kind == "dir":
                path.mkdir(mode=0o755)
            elif entry.kind == "symlink":
                path.symlink_to(entry.link)
            else:
                shutil.copyfile(entry.path, path, follow_symlinks=False)
            if entry.kind != "symlink":
                path.chmod(entry.mode)
        temp.chmod(0o755)  # mkdtemp makes it 0o700; pods run as another uid than this server may
        try:
            temp.rename(target)
        except OSError:
            if not target.is_dir():  # else another replica copied the same content first
                raise
    finally:
        shutil.rmtree(temp, ignore_errors=True)


def prune(parent: pathlib.Path, *, now: float, keep: str | None = None) -> list[str]:
    """Remove copies unused for ``KEEP_SECONDS`` beyond the ``KEEP_NEWEST`` newest, and stale
    temp dirs; returns the names removed. ``keep`` (the copy being used) always stays."""
    copies: list[tuple[float, str]] = []
    removed: list[str] = []
    with os.scandir(parent) as found:
        for item in found:
            with contextlib.suppress(FileNotFoundError):
                if not item.is_dir(follow_symlinks=False):
                    continue
                mtime = item.stat(follow_symlinks=False).st_mtime
                if item.name.startswith(_TMP_PREFIX):
                    if now - mtime > STALE_TMP_SECONDS:
                        removed.append(item.name)
                else:
                    copies.append((mtime, item.name))
    copies.sort(reverse=True)
    for index, (mtime, name) in enumerate(copies):
        if index >= KEEP_NEWEST and now - mtime > KEEP_SECONDS and name != keep:
            removed.append(name)
    for name in removed:
        shutil.rmtree(parent / name, ignore_errors=True)
    return sorted(removed)
