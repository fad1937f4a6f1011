"""Offline wheels (``kubeline.testing.wheels``) and folders of pipelines that install them."""

from __future__ import annotations

import pathlib
import textwrap

import pytest

from kubeline.executors import local_venvs
from kubeline.testing import wheels


@pytest.fixture
def wheelhouse(tmp_path: pathlib.Path) -> pathlib.Path:
    """kl-base 1.0 and 2.0, and kl-demo 1.0 which requires kl-base (any version)."""
    folder = tmp_path / "wheels"
    wheels.make(folder, name="kl-base", version="1.0")
    wheels.make(folder, name="kl-base", version="2.0")
    wheels.make(folder, name="kl-demo", version="1.0", requires=["kl-base"])
    return folder


def offline(wheelhouse: pathlib.Path, *lines: str) -> str:
    """A requirements text that installs only from the wheelhouse (no index)."""
    return "\n".join(["--no-index", f"--find-links {wheelhouse}", *lines]) + "\n"


def pipeline(root: pathlib.Path, name: str, *, files: dict[str, str]) -> pathlib.Path:
    folder = root / name
    folder.mkdir(parents=True)
    files = {"main.py": "print('hi')\n", **files}
    for file_name, text in files.items():
        (folder / file_name).write_text(textwrap.dedent(text))
    return folder


@pytest.fixture
def cache(tmp_path: pathlib.Path) -> local_venvs.VenvCache:
    return local_venvs.VenvCache(tmp_path / "venvs", uv_cache_dir=tmp_path / "uv-cache")
