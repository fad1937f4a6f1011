"""Tiny pure-Python wheels made on the spot, so venv tests install offline (``--find-links``).

``make(folder, name="kl-demo", version="1.0", requires=["kl-base==1.0"])`` writes
``kl_demo-1.0-py3-none-any.whl`` with a module ``kl_demo`` whose ``VERSION`` is the version,
and a ``RECORD`` with real hashes (installers check it).
"""

from __future__ import annotations

import base64
import hashlib
import pathlib
import zipfile
from collections.abc import Sequence


def make(folder: pathlib.Path, *, name: str, version: str, requires: Sequence[str] = ()) -> pathlib.Path:
    module = name.replace("-", "_")
    info = f"{module}-{version}.dist-info"
    metadata = "\n".join(["Metadata-Version: 2.1", f"Name: {name}", f"Version: {version}",
                          *(f"Requires-Dist: {r}" for r in requires)]) + "\n"
    files = {
        f"{module}/__init__.py": f"VERSION = {version!r}\n",
        f"{info}/METADATA": metadata,
        f"{info}/WHEEL": "Wheel-Version: 1.0\nGenerator: kubeline.testing\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    record = [f"{path},sha256={_digest(text)},{len(text.encode())}" for path, text in files.items()]
    record.append(f"{info}/RECORD,,")
    files[f"{info}/RECORD"] = "\n".join(record) + "\n"
    folder.mkdir(parents=True, exist_ok=True)
    wheel = folder / f"{module}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        for path, text in files.items():
            archive.writestr(path, text)
    return wheel


def _digest(text: str) -> str:
    return base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()).rstrip(b"=").decode()
