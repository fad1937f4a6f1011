"""Pre-heating with real uv and offline wheels: states, failures named, concurrency bounded,
no race with a run building the same venv."""

from __future__ import annotations

import asyncio
import pathlib
import sys

from kubeline.environments import service
from kubeline.pipelines import loader

from .conftest import offline, pipeline

PY = f"{sys.version_info.major}.{sys.version_info.minor}"


def environments(cache, *, concurrency: int = 2) -> service.Environments:
    return service.Environments(venvs=cache, default_executor="local-warm", concurrency=concurrency)


async def test_discovery_preheats_and_the_state_goes_ready(cache, tmp_path, wheelhouse):
    folder = pipeline(tmp_path / "pipelines", "demo", files={
        "requirements.txt": offline(wheelhouse, "kl-demo"), "pipeline.yaml": f"python_version: '{PY}'\n"})
    found = loader.load_folder(folder)
    envs = environments(cache)
    try:
        assert envs.state(found).state == "missing"
        assert envs.preheat([found]) == 1
        assert envs.state(found).state in ("pending", "building")
        assert envs.preheat([found]) == 0  # queued once, not twice
        await envs.idle()
        state = envs.state(found)
        assert (state.state, state.reason) == ("ready", None)
        python, packages = await envs.packages(state.venvs[0])
        assert python is not None and python.startswith(PY)
        assert {(p.name, p.version) for p in packages} == {("kl-base", "2.0"), ("kl-demo", "1.0")}
        # A run asks for the same venv: it is there, nothing is built again.
        venv = await cache.ensure(PY, folder / "requirements.txt")
        assert venv == cache.path_of(state.venvs[0].key)
    finally:
        await envs.close()


async def test_bad_requirements_fail_with_a_reason_naming_the_package(cache, tmp_path, wheelhouse):
    folder = pipeline(tmp_path / "pipelines", "broken", files={
        "requirements.txt": offline(wheelhouse, "kl-nonexistent-zzz==1.0")})
    found = loader.load_folder(folder)
    envs = environments(cache)
    try:
        envs.preheat([found])
        await envs.idle()
        state = envs.state(found)
        assert state.state == "failed"
        assert state.reason is not None
        assert state.reason.startswith("pip install of requirements.txt failed:")
        assert "kl-nonexistent-zzz" in state.reason
        assert envs.preheat([found]) == 0  # a known failure is not retried by every discovery
        # Another process on this machine sees the same state and reason (recorded beside the venvs).
        other = environments(type(cache)(cache.root, uv_cache_dir=tmp_path / "uv-cache"))
        assert (other.state(found).state, other.state(found).reason) == ("failed", state.reason)
        # Fixing the requirements gives a new key: it builds and the state is ready.
        (folder / "requirements.txt").write_text(offline(wheelhouse, "kl-base==1.0"))
        assert envs.preheat([found]) == 1
        await envs.idle()
        assert envs.state(found).state == "ready"
    finally:
        await envs.close()


async def test_concurrency_is_bounded(cache, tmp_path, wheelhouse):
    root = tmp_path / "pipelines"
    found = [loader.load_folder(pipeline(root, f"p{i}", files={
        "requirements.txt": offline(wheelhouse, f"kl-base=={1 + i % 2}.0", f"# variant {i}")}))
        for i in range(4)]
    envs = environments(cache, concurrency=1)
    seen: list[int] = []
    try:
        assert envs.preheat(found) == 4
        while envs.busy:
            seen.append(len(cache.building))
            await asyncio.sleep(0.005)
        assert max(seen) == 1
        assert [envs.state(p).state for p in found] == ["ready"] * 4
    finally:
        await envs.close()


async def test_a_run_and_preheating_build_one_venv(tmp_path, wheelhouse):
    from kubeline.executors import local_venvs

    folder = pipeline(tmp_path / "pipelines", "demo", files={"requirements.txt": offline(wheelhouse, "kl-demo")})
    found = loader.load_folder(folder)
    # Two caches as two processes would have them: only the file lock can serialise them.
    first = local_venvs.VenvCache(tmp_path / "venvs", uv_cache_dir=tmp_path / "uv-cache")
    second = local_venvs.VenvCache(tmp_path / "venvs", uv_cache_dir=tmp_path / "uv-cache")
    envs = environments(first)
    try:
        envs.preheat([found])
        ran = await second.ensure("3.11", folder / "requirements.txt")
        await envs.idle()
        built = [p for p in (tmp_path / "venvs").iterdir() if not p.name.startswith(".")]
        assert built == [ran]
        assert envs.state(found).state == "ready"
    finally:
        await envs.close()


async def test_pipelines_without_local_venvs_have_no_environment(cache, tmp_path):
    folder = pipeline(tmp_path / "pipelines", "remote", files={"pipeline.yaml": """
        executor: kubernetes
    """})
    http = pipeline(tmp_path / "pipelines", "http", files={"pipeline.yaml": """
        stages: [{id: get, type: http_request, config: {url: "http://127.0.0.1:9/"}}]
    """})
    envs = environments(cache)
    try:
        for found in (loader.load_folder(folder), loader.load_folder(http)):
            assert envs.state(found).state == "none"
            assert envs.preheat([found]) == 0
    finally:
        await envs.close()


async def test_preheating_off(cache, tmp_path, wheelhouse):
    folder = pipeline(tmp_path / "pipelines", "demo", files={"requirements.txt": offline(wheelhouse, "kl-demo")})
    envs = environments(cache, concurrency=0)
    try:
        assert envs.preheat([loader.load_folder(folder)]) == 0
        assert envs.state(loader.load_folder(folder)).state == "missing"
    finally:
        await envs.close()


def test_wheelhouse_is_offline(wheelhouse: pathlib.Path):
    assert sorted(p.name for p in wheelhouse.iterdir()) == [
        "kl_base-1.0-py3-none-any.whl", "kl_base-2.0-py3-none-any.whl", "kl_demo-1.0-py3-none-any.whl"]
