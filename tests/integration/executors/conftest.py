from __future__ import annotations

import itertools
import pathlib

import pytest

from kubeline.executors import base, local, local_venvs
from kubeline.logs import LogStore

_ids = itertools.count()


class Harness:
    def __init__(self, tmp_path: pathlib.Path, executor: local.LocalExecutor) -> None:
        self.tmp_path = tmp_path
        self.executor = executor
        self.store = LogStore(tmp_path / "logs")

    def spec(self, code: str | None = None, *, argv=None, **kwargs) -> base.AttemptSpec:
        n = next(_ids)
        values = {"attempt_id": f"att-{n}", "run_id": "run-1", "pipeline": "p",
                  "stage_id": f"s{n}", "number": 1, "stage_type": "python", "folder": None,
                  "argv": argv or ("python", "-c", code), "runtime": base.Runtime.KUBELINE,
                  "python_version": "3.11", "requirements": None}
        values.update(kwargs)
        return base.AttemptSpec(**values)

    def sink(self, spec: base.AttemptSpec, secrets=()):
        return self.store.sink(run_id=spec.run_id, stage_id=spec.stage_id, attempt=spec.number,
                               secrets=secrets)

    async def run(self, spec: base.AttemptSpec, secrets=()):
        handle = await self.executor.start(spec, self.sink(spec, secrets))
        result = await self.executor.wait(handle)
        await self.executor.release(handle)  # as the engine does once the result is stored
        return result

    def log(self, spec: base.AttemptSpec) -> list[tuple[str, str]]:
        return [(line.stream, line.text)
                for line in self.store.read(spec.run_id, stage_id=spec.stage_id)]


@pytest.fixture
async def harness(tmp_path):
    venvs = local_venvs.VenvCache(tmp_path / "venvs")
    executor = local.LocalExecutor(work_dir=tmp_path / "work", artifacts_dir=tmp_path / "art",
                                   venvs=venvs, log_line_limit=1024, kill_grace=1.0)
    yield Harness(tmp_path, executor)
    await executor.close()
