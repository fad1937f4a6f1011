"""``requirements.txt.lock`` installed exactly, and ``python_version`` resolved from every
interpreter uv, pyenv or uv's install dir holds, with a missing one explained."""
# ruff: noqa: ASYNC221 - running the venv's python synchronously is fine in a test

from __future__ import annotations

import os
import pathlib
import subprocess
import sys

import pytest

from kubeline.domain import errors
from kubeline.executors import local_pythons, local_venvs
from kubeline.pipelines import loader

from .conftest import offline, pipeline

PY = f"{sys.version_info.major}.{sys.version_info.minor}"


def imported_version(venv: pathlib.Path, module: str) -> str:
    done = subprocess.run([venv / "bin" / "python", "-c", f"import {module}; print({module}.VERSION)"],
                          capture_output=True, text=True, check=True)
    return done.stdout.strip()


async def test_the_lock_wins_and_is_installed_exactly(cache, tmp_path, wheelhouse):
    folder = pipeline(tmp_path / "pipelines", "locked", files={
        "requirements.txt": offline(wheelhouse, "kl-demo"),  # would resolve kl-base 2.0
        "requirements.txt.lock": offline(wheelhouse, "kl-base==1.0", "kl-demo==1.0"),
    })
    found = loader.load_folder(folder)
    assert found.spec.requirements == "requirements.txt.lock"
    venv = await cache.ensure(found.spec.python_version, folder / found.spec.requirements)
    assert imported_version(venv, "kl_base") == "1.0"
    names = {p.name for p in cache.packages(venv)}
    assert names == {"kl-base", "kl-demo"}  # exactly the lock: nothing resolved in besides


async def test_an_unpinned_lock_line_is_refused(cache, tmp_path, wheelhouse):
    lock = tmp_path / "requirements.txt.lock"
    lock.write_text(offline(wheelhouse, "kl-base==1.0", "kl-demo>=1"))
    with pytest.raises(errors.ExecutorError) as caught:
        await cache.ensure(PY, lock)
    assert str(caught.value).startswith("requirements.txt.lock line 4: 'kl-demo>=1' is not pinned")
    assert "uv pip compile requirements.txt -o requirements.txt.lock" in str(caught.value)
    assert cache.status(cache.key(PY, lock)).reason == str(caught.value)


async def test_an_incomplete_lock_names_the_missing_dependency(cache, tmp_path, wheelhouse):
    lock = tmp_path / "requirements.txt.lock"
    lock.write_text(offline(wheelhouse, "kl-demo==1.0"))
    with pytest.raises(errors.ExecutorError,
                       match=r"requirements.txt.lock is incomplete: kl-demo requires kl-base, which the lock does not list"):
        await cache.ensure(PY, lock)
    assert sorted(p.name for p in cache.root.iterdir()) == [".failed", ".locks"]  # nothing half-built left


async def test_a_missing_python_version_says_what_is_present_and_how_to_add_one(cache):
    with pytest.raises(local_pythons.MissingPython) as caught:
        await cache.ensure("3.99", None)
    message = str(caught.value)
    assert message.startswith("python_version '3.99': no Python 3.99 on this machine (present: ")
    assert f"{sys.version_info.major}.{sys.version_info.minor}." in message  # this interpreter's version is listed
    assert "uv python install 3.99" in message and "pyenv install 3.99" in message
    assert "pyenv: " not in message  # never a shim's own error
    assert cache.status(cache.key("3.99", None)).reason == message


def _isolated_env(tmp_path: pathlib.Path, **extra: str) -> dict[str, str]:
    """No interpreter on PATH, no uv-managed ones: only what the given dirs hold."""
    empty = tmp_path / "empty-bin"
    empty.mkdir(exist_ok=True)
    return {"PATH": str(empty), "HOME": str(tmp_path / "home"), "UV_PYTHON_INSTALL_DIR": str(tmp_path / "uv-pythons"),
            **extra}


def _base_python() -> pathlib.Path:
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    return pathlib.Path(sys.base_prefix) / "bin" / version


async def test_a_version_only_a_pyenv_directory_holds_is_used(tmp_path):
    """The pyenv case of this machine: 3.12 installed under ~/.pyenv/versions but not selected,
    so its shim fails; Kubeline takes the interpreter from the directory instead."""
    real = _base_python()
    version = subprocess.run([real, "-c", "import platform; print(platform.python_version())"],
                             capture_output=True, text=True, check=True).stdout.strip()
    pyenv = tmp_path / "pyenv"
    (pyenv / "versions" / version / "bin").mkdir(parents=True)
    (pyenv / "versions" / version / "bin" / "python3").symlink_to(real)
    env = _isolated_env(tmp_path, PYENV_ROOT=str(pyenv))
    inventory = local_pythons.Inventory(uv=local_venvs.find_uv(), environ=env)
    chosen = inventory.resolve(PY)
    assert (chosen.source, chosen.version) == ("pyenv", version)
    assert chosen.path == pyenv / "versions" / version / "bin" / "python3"

    cache = local_venvs.VenvCache(tmp_path / "venvs", uv_cache_dir=tmp_path / "uv-cache", environ=env)
    venv = await cache.ensure(PY, None)
    assert cache.python_of(venv) == version
    with pytest.raises(local_pythons.MissingPython, match=rf"\(present: {version}\)"):
        await cache.ensure("3.99", None)


def test_the_machines_pyenv_versions_are_listed():
    """On a machine with pyenv versions (this one has several), every one of them is offered."""
    root = pathlib.Path(os.environ.get("PYENV_ROOT", pathlib.Path.home() / ".pyenv")) / "versions"
    held = sorted(p.name for p in root.iterdir() if (p / "bin" / "python3").exists()) if root.is_dir() else []
    if not held:
        pytest.skip("no pyenv versions on this machine")
    found = local_pythons.Inventory(uv=local_venvs.find_uv(), environ=dict(os.environ)).interpreters()
    versions = {i.version for i in found}
    assert set(held) <= versions


def test_choose_prefers_the_newest_match_and_a_real_binary_over_a_shim():
    found = [local_pythons.Interpreter(version="3.11.7", path=pathlib.Path("/p/shims/python3.11"), source="uv"),
             local_pythons.Interpreter(version="3.11.7", path=pathlib.Path("/p/versions/3.11.7/bin/python3"),
                                       source="pyenv"),
             local_pythons.Interpreter(version="3.11.2", path=pathlib.Path("/usr/bin/python3.11"), source="uv"),
             local_pythons.Interpreter(version="3.12.1", path=pathlib.Path("/x/bin/python3"), source="uv-managed")]
    assert local_pythons.choose(found, "3.11") == found[1]
    assert local_pythons.choose(found, "3.11.2") == found[2]
    assert local_pythons.choose(found, "3") == found[3]
    assert local_pythons.choose(found, "3.9") is None
