"""Fixtures of the replica tests: the ``KUBELINE_*`` environment of a test's processes (one home,
one database) and ``spawn(role, **env)``, which starts ``replica_process.py`` and waits until it
is ready; whatever is still running at the end gets SIGTERM (then SIGKILL)."""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys
from collections.abc import Callable, Iterator

import pytest

from kubeline import testing

SCRIPT = pathlib.Path(__file__).with_name("replica_process.py")


@pytest.fixture
def env(tmp_path: pathlib.Path, database_url: str) -> dict[str, str]:
    return {**os.environ, "KUBELINE_HOME": str(tmp_path / "home"), "KUBELINE_DATABASE_URL": database_url,
            "KUBELINE_SECRET_KEY": "", "KUBELINE_LEASE_SECONDS": "10", "PYTHONUNBUFFERED": "1"}


@pytest.fixture
def spawn(tmp_path: pathlib.Path, env: dict[str, str]) -> Iterator[Callable[..., subprocess.Popen[str]]]:
    started: list[subprocess.Popen[str]] = []

    def _spawn(role: str, **extra: str) -> subprocess.Popen[str]:
        with (tmp_path / f"{role}-{len(started)}.log").open("w") as log:
            proc = subprocess.Popen([sys.executable, str(SCRIPT), role], env={**env, **extra},
                                    stdout=subprocess.PIPE, stderr=log, text=True)
        started.append(proc)
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.strip() == "ready", (tmp_path / f"{role}-{len(started) - 1}.log").read_text()[-2000:]
        return proc

    yield _spawn
    testing.stop_processes(started, timeout=20)
    for proc in started:
        if proc.stdout is not None:
            proc.stdout.close()
