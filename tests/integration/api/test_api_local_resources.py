"""CPU time and peak memory of local attempts, as ``GET /runs/{id}/attempts/{aid}`` reports them."""

from __future__ import annotations

import pathlib
import sys
from collections.abc import Iterator

import pytest

from kubeline import client as client_
from kubeline import settings as settings_
from kubeline import testing

pytestmark = pytest.mark.slow
HUNGRY = f"""
stages:
  - {{id: eat, type: shell, command: '{sys.executable} eat.py'}}
  - {{id: nap, type: shell, dependsOn: [eat], command: 'sleep 30'}}
"""
EAT = """
import time
block = bytearray(80 * 1024 * 1024)
block[::4096] = b"x" * len(block[::4096])  # touch every page: resident, not just reserved
end = time.process_time() + 0.3
while time.process_time() < end:
    pass
"""


@pytest.fixture
def api(tmp_path: pathlib.Path, database_url: str) -> Iterator[client_.Client]:
    (tmp_path / "pipelines" / "hungry").mkdir(parents=True)
    (tmp_path / "pipelines" / "hungry" / "pipeline.yaml").write_text(HUNGRY)
    (tmp_path / "pipelines" / "hungry" / "eat.py").write_text(EAT)
    settings = settings_.Settings(home=tmp_path / "home", database_url=database_url,
                                  pipelines_dir=tmp_path / "pipelines",
                                  uv_cache_dir=pathlib.Path("/tmp/kubeline-test-venvs/uv-cache"))
    with testing.ServerThread(settings) as server, server.client(timeout=60) as running:
        yield running


def test_peak_memory_and_cpu_time_of_a_local_attempt(api: client_.Client) -> None:
    run = api.create_run("hungry")
    eat = _attempt(api, run.id, "eat", state="succeeded")
    found = api.attempt(run.id, eat.id).resources
    assert found is not None and found.available, found
    assert found.peak_memory_bytes is not None and found.peak_memory_bytes >= 80 * 1024 * 1024
    assert found.cpu_seconds is not None and found.cpu_seconds >= 0.25
    nap = _attempt(api, run.id, "nap", state="running")
    live = api.attempt(run.id, nap.id).resources
    assert live is not None and live.available and live.memory_bytes and live.memory_bytes > 0, live
    api.cancel(run.id)
    api.wait(run.id, timeout=60)


def _attempt(api: client_.Client, run_id: str, stage: str, *, state: str):  # type: ignore[no-untyped-def]
    import time

    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        for attempt in api.attempts(run_id, stage=stage):
            if attempt.state.value == state:
                return attempt
            if attempt.state.value in ("failed", "timed_out", "cancelled"):
                raise AssertionError(f"{stage} ended {attempt.state.value}: {api.logs(run_id)}")
        time.sleep(0.2)
    raise AssertionError(f"no {state} attempt of {stage}: {api.attempts(run_id)}")
