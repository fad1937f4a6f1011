"""uv-made pipeline venvs: install, reuse, clear errors, one build under concurrency.

Installs ``six`` from PyPI (the one network use allowed in tests).
"""
# ruff: noqa: ASYNC221 - running the venv's python synchronously is fine in a test

from __future__ import annotations

import asyncio
import subprocess
import sys

import pytest

from kubeline.domain import errors, states
from kubeline.executors import base, local, local_venvs
from kubeline.logs import LogStore

PY = f"{sys.version_info.major}.{sys.version_info.minor}"


@pytest.fixture
def cache(tmp_path):
    return local_venvs.VenvCache(tmp_path / "venvs", uv_cache_dir=tmp_path / "uv-cache")


async def test_requirements_are_installed_and_the_venv_is_reused(cache, tmp_path):
    requirements = tmp_path / "requirements.txt"
    requirements.write_text("six\n")
    venv = await cache.ensure(PY, requirements)
    python = venv / "bin" / "python"
    out = subprocess.run([python, "-c", "import six, kubeline.task, sys; print(sys.prefix)"],
                         capture_output=True, text=True, check=True)
    assert out.stdout.strip() == str(venv)
    # Kubeline's own dependencies do not leak into the pipeline venv.
    leaked = subprocess.run([python, "-c", "import pydantic"], capture_output=True, check=False)
    assert leaked.returncode != 0

    fresh = local_venvs.VenvCache(tmp_path / "venvs", uv_cache_dir=tmp_path / "uv-cache")
    assert await fresh.ensure(PY, requirements) == venv  # another process: same cached venv
    requirements.write_text("six\n# changed\n")
    assert await fresh.ensure(PY, requirements) != venv  # content decides the key


async def test_no_requirements_share_one_venv_per_python_version(cache):
    first = await cache.ensure(PY, None)
    assert await cache.ensure(PY, None) == first
    assert cache.key(PY, None) != cache.key(PY, None, ["six"])


async def test_failing_requirements_give_uv_error_and_leave_nothing(cache, tmp_path):
    requirements = tmp_path / "requirements.txt"
    requirements.write_text("nonexistent-pkg-kubeline-test-zzz==1.0\n")
    with pytest.raises(errors.ExecutorError) as caught:
        await cache.ensure(PY, requirements)
    message = str(caught.value)
    assert message.startswith("pip install of requirements.txt failed:")
    assert "nonexistent-pkg-kubeline-test-zzz" in message
    leftovers = [p.name for p in (tmp_path / "venvs").iterdir() if p.name not in (".locks", ".failed")]
    assert leftovers == []


async def test_missing_python_version_is_explained(cache):
    with pytest.raises(errors.ExecutorError,
                       match=r"python_version '3\.6\.99': no Python 3\.6\.99 on this machine \(present: .*\); "
                             r"add one with `uv python install 3\.6\.99` or `pyenv install 3\.6\.99`"):
        await cache.ensure("3.6.99", None)


async def test_concurrent_ensures_build_once(tmp_path):
    def make():
        return local_venvs.VenvCache(tmp_path / "venvs", uv_cache_dir=tmp_path / "uv-cache")

    caches = [make(), make(), make()]  # separate instances: only the file lock can serialise
    venvs = await asyncio.gather(*(c.ensure(PY, None, ["six"]) for c in caches))
    assert len(set(venvs)) == 1
    built = [p for p in (tmp_path / "venvs").iterdir() if not p.name.startswith(".")]
    assert built == [venvs[0]]


async def test_pipeline_runtime_runs_in_the_venv(cache, tmp_path):
    requirements = tmp_path / "requirements.txt"
    requirements.write_text("six\n")
    executor = local.LocalExecutor(work_dir=tmp_path / "work", artifacts_dir=tmp_path / "art",
                                   venvs=cache)
    store = LogStore(tmp_path / "logs")
    spec = base.AttemptSpec(
        attempt_id="v1", run_id="r", pipeline="p", stage_id="sh", number=1, stage_type="shell",
        folder=None, argv=("sh", "-c", 'python -c "import six, sys; print(sys.prefix)"; '
                                       'echo "$VIRTUAL_ENV"'),
        runtime=base.Runtime.PIPELINE, python_version=PY, requirements=requirements)
    result = await executor.wait(await executor.start(
        spec, store.sink(run_id="r", stage_id="sh", attempt=1)))
    assert result.succeeded, result.error
    venv = await cache.ensure(PY, requirements)
    assert [line.text for line in store.read("r")] == [str(venv), str(venv)]

    bad = base.AttemptSpec(
        attempt_id="v2", run_id="r", pipeline="p", stage_id="bad", number=1, stage_type="python",
        folder=None, argv=("python", "-c", "pass"), runtime=base.Runtime.PIPELINE,
        python_version="3.6.99", requirements=None)
    with pytest.raises(errors.ExecutorError, match=r"no Python 3\.6\.99 on this machine"):
        await executor.start(bad, store.sink(run_id="r", stage_id="bad", attempt=1))
    assert states.FailureKind.START_FAILED  # the engine maps ExecutorError to START_FAILED
