from __future__ import annotations

import asyncio
import itertools
import pathlib
import textwrap

import pytest

from kubeline.executors import base, local_venvs, local_warm
from kubeline.logs import LogStore

_ids = itertools.count()


class WarmHarness:
    def __init__(self, tmp_path: pathlib.Path, executor: local_warm.WarmExecutor) -> None:
        self.tmp_path = tmp_path
        self.executor = executor
        self.store = LogStore(tmp_path / "logs")

    def spec(self, code: str = "", *, argv: tuple[str, ...] | None = None, **kwargs) -> base.AttemptSpec:
        n = next(_ids)
        folder = self.tmp_path / f"pipe{n}"
        folder.mkdir()
        (folder / "main.py").write_text(textwrap.dedent(code))
        values = {"attempt_id": f"warm-{n}", "run_id": "run-1", "pipeline": "p",
                  "stage_id": f"s{n}", "number": 1, "stage_type": "python", "folder": folder,
                  "argv": argv or ("python", "-u", "main.py"), "runtime": base.Runtime.PIPELINE,
                  "python_version": "3.11", "requirements": None}
        values.update(kwargs)
        return base.AttemptSpec(**values)

    def sink(self, spec: base.AttemptSpec, secrets=()):
        return self.store.sink(run_id=spec.run_id, stage_id=spec.stage_id, attempt=spec.number,
                               secrets=secrets)

    async def start(self, spec: base.AttemptSpec, secrets=()) -> dict:
        return await self.executor.start(spec, self.sink(spec, secrets))

    async def run(self, spec: base.AttemptSpec, secrets=(), *, warm: bool = True):
        handle = await self.start(spec, secrets)
        assert ("warm_worker" in handle) is warm, handle
        result = await self.executor.wait(handle)
        await self.executor.release(handle)  # as the engine does once the result is stored
        return result

    def log(self, spec: base.AttemptSpec) -> list[tuple[str, str]]:
        return [(line.stream, line.text)
                for line in self.store.read(spec.run_id, stage_id=spec.stage_id)]


@pytest.fixture(scope="session")
def venvs_root(tmp_path_factory) -> pathlib.Path:
    root = tmp_path_factory.mktemp("warm-venvs")
    asyncio.run(local_venvs.VenvCache(root).ensure("3.11", None))  # built once per session
    return root


def make_executor(tmp_path: pathlib.Path, venvs_root: pathlib.Path) -> local_warm.WarmExecutor:
    return local_warm.WarmExecutor(work_dir=tmp_path / "work", artifacts_dir=tmp_path / "art",
                                   venvs=local_venvs.VenvCache(venvs_root), log_line_limit=1024,
                                   kill_grace=1.0)


@pytest.fixture
async def warm(tmp_path, venvs_root):
    executor = make_executor(tmp_path, venvs_root)
    yield WarmHarness(tmp_path, executor)
    await executor.close()
