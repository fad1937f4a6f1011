"""Pack a pipeline folder into the gzipped tar the pod unpacks (it travels in a ConfigMap).

The archive is deterministic (sorted names, zero mtimes and owners) so the same folder gives
the same bytes. Caches and VCS data are left out; symlinks are kept only when they point
inside the folder. Folders that pack to more than ``LIMIT`` bytes are refused with an error
that says what to do instead (a ConfigMap holds at most 1 MiB).
"""

from __future__ import annotations

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


def pack(folder: pathlib.Path, *, limit: int = LIMIT) -> bytes:
    if not folder.is_dir():
        raise errors.ExecutorError(f"pipeline folder {folder} does not exist")
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for path in _files(folder):
            rel = path.relative_to(folder).as_posix()
            info = tar.gettarinfo(str(path), arcname=rel)
            info.mtime, info.uid, info.gid, info.uname, info.gname = 0, 0, 0, "", ""
            if info.issym():
                target = (path.parent / path.readlink()).resolve()
                if not target.is_relative_to(folder.resolve()):
                    continue
            if info.isreg():
                info.mode = 0o755 if info.mode & 0o111 else 0o644
                with path.open("rb") as handle:
                    tar.addfile(info, handle)
            elif info.isdir() or info.issym():
                tar.addfile(info)
    packed = gzip.compress(raw.getvalue(), compresslevel=6, mtime=0)
    if len(packed) > limit:
        raise errors.ExecutorError(
            f"pipeline folder {folder} packs to {len(packed) // 1024} KiB, more than the "
            f"{limit // 1024} KiB the Kubernetes executor sends in a ConfigMap; move data files "
            "out of the folder (read them from object storage or a volume), or bake the code "
            "into an image and set kubernetes.image")
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
