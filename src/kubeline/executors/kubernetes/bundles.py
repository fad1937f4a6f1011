"""Pack a pipeline folder into the gzipped tar the pod unpacks (inline in the Job, or a ConfigMap).

The archive is deterministic (sorted names, zero mtimes and owners) so the same folder gives
the same bytes. Which files travel is decided once, in ``entries``, and shared with the copy
onto a volume (``code_volume``): caches and VCS data are left out; symlinks are kept only when
they point inside the folder. Folders that pack to more than ``LIMIT`` bytes raise ``TooLarge``
(packing stops as soon as the limit is passed), whose message names the ways out: the
executor then copies the folder to the code volume when it has one (a ConfigMap holds at most
1 MiB).
"""

from __future__ import annotations

import dataclasses
import gzip
import io
import os
import pathlib
import tarfile

from kubeline.domain import errors

LIMIT = 900 * 1024
SKIP_DIRS = frozenset({".git", ".hg", ".svn", "__pycache__", ".venv", "venv", ".mypy_cache",
                       ".pytest_cache", ".ruff_cache", ".ipynb_checkpoints", "node_modules"})
SKIP_SUFFIXES = (".pyc", ".pyo")
WAYS_OUT = ("copy it to a volume the pods mount (set KUBELINE_KUBERNETES_CODE_CLAIM to a PVC and "
            "KUBELINE_KUBERNETES_CODE_DIR to where this server mounts it), or bake it into an image "
            "and set kubernetes.image and kubernetes.codePath; or move data files out of the folder")


class TooLarge(errors.ExecutorError):
    """The folder does not fit the bundle; it can still reach the pod by volume or image."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class Entry:
    """One thing that travels: a file (mode 0o755 or 0o644), a directory, or a symlink whose
    ``link`` target is relative and stays inside the folder."""

    path: pathlib.Path
    rel: str
    kind: str  # "file" | "dir" | "symlink"
    mode: int
    link: str = ""


def entries(folder: pathlib.Path) -> list[Entry]:
    """What of ``folder`` reaches the pod, sorted by relative path; ``ExecutorError`` when the
    folder is missing."""
    if not folder.is_dir():
        raise errors.ExecutorError(f"pipeline folder {folder} does not exist")
    root = folder.resolve()
    found: list[Entry] = []
    for path in _files(folder):
        rel = path.relative_to(folder).as_posix()
        if path.is_symlink():
            target = (path.parent.resolve() / path.readlink()).resolve()
            if target.is_relative_to(root):
                link = os.path.relpath(target, path.parent.resolve())
                found.append(Entry(path=path, rel=rel, kind="symlink", mode=0o777, link=link))
        elif path.is_dir():
            found.append(Entry(path=path, rel=rel, kind="dir", mode=0o755))
        elif path.is_file():
            executable = path.stat().st_mode & 0o111
            found.append(Entry(path=path, rel=rel, kind="file", mode=0o755 if executable else 0o644))
    return found


def pack(folder: pathlib.Path, *, limit: int = LIMIT) -> bytes:
    raw = io.BytesIO()
    with gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=6, mtime=0) as zipped, \
            tarfile.open(fileobj=zipped, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for entry in entries(folder):
            info = tarfile.TarInfo(entry.rel)
            info.mode = entry.mode
            if entry.kind == "file":
                info.size = entry.path.stat().st_size
                with entry.path.open("rb") as handle:
                    tar.addfile(info, handle)
            elif entry.kind == "dir":
                info.type = tarfile.DIRTYPE
                tar.addfile(info)
            else:
                info.type, info.linkname = tarfile.SYMTYPE, entry.link
                tar.addfile(info)
            if raw.tell() > limit:
                break
    packed = raw.getvalue()
    if len(packed) > limit:
        raise TooLarge(
            f"pipeline folder {folder} packs to more than the {limit // 1024} KiB the Kubernetes "
            f"executor sends with the Job or in a ConfigMap; {WAYS_OUT}")
    return packed


def _files(folder: pathlib.Path) -> list[pathlib.Path]:
    found: list[pathlib.Path] = []
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if d not in SKIP_DIRS)
        base = pathlib.Path(root)
        found.extend(base / d for d in dirs if (base / d).is_symlink())
        found.extend(base / f for f in sorted(files) if not f.endswith(SKIP_SUFFIXES))
        if base != folder:
            found.append(base)
    return sorted(found, key=lambda p: p.relative_to(folder).as_posix())
