"""A real server pre-heats on discovery: the API (list, detail, environment route), the client and
the CLI show ready / failed: <reason> and the packages, before any run."""

from __future__ import annotations

import pathlib
import time

import pytest
from typer.testing import CliRunner

from kubeline import client as client_
from kubeline import settings as settings_
from kubeline import testing
from kubeline.cli import main as cli

from .conftest import offline, pipeline


@pytest.fixture
def folders(tmp_path: pathlib.Path, wheelhouse: pathlib.Path) -> pathlib.Path:
    root = tmp_path / "pipelines"
    pipeline(root, "demo", files={"requirements.txt": offline(wheelhouse, "kl-demo")})
    pipeline(root, "broken", files={"requirements.txt": offline(wheelhouse, "kl-missing-zzz==3.0")})
    pipeline(root, "builtin", files={"pipeline.yaml": """
        stages: [{id: shape, type: json_transform, config: {expression: "a", data: {a: 1}}}]
    """})
    return root


def wait_settled(api: client_.Client, names: list[str], timeout: float = 60.0) -> dict[str, client_.schemas.PipelineOut]:
    deadline = time.monotonic() + timeout
    while True:
        found = {p.name: p for p in api.pipelines() if p.name in names}
        states = {n: p.environment.state for n, p in found.items() if p.environment}
        if len(states) == len(names) and all(s in ("ready", "failed", "none") for s in states.values()):
            return found
        assert time.monotonic() < deadline, f"environments did not settle: {states}"
        time.sleep(0.1)


def test_server_preheats_and_shows_state_and_packages(tmp_path, database_url, folders, monkeypatch):
    settings = settings_.Settings(home=tmp_path / "home", database_url=database_url, pipelines_dir=folders,
                                  uv_cache_dir=tmp_path / "uv-cache", preheat_concurrency=1)
    with testing.ServerThread(settings) as server, server.client() as api:
        found = wait_settled(api, ["demo", "broken", "builtin"])
        assert found["demo"].environment is not None and found["demo"].environment.state == "ready"
        broken = api.pipeline("broken").environment
        assert broken is not None and broken.state == "failed"
        assert broken.reason is not None and "kl-missing-zzz" in broken.reason
        assert found["builtin"].environment is not None and found["builtin"].environment.state == "none"

        env = api.pipeline_environment("demo")
        assert env.state == "ready" and len(env.venvs) == 1
        venv = env.venvs[0]
        assert (venv.stages, venv.requirements, venv.state) == (["main"], "requirements.txt", "ready")
        assert [(p.name, p.version) for p in venv.packages] == [("kl-base", "2.0"), ("kl-demo", "1.0")]
        assert venv.python is not None
        assert api.pipeline_environment("broken").venvs[0].packages == []

        # The first run finds the venv built: its stage runs at once.
        run = api.create_run("demo")
        assert api.wait(run.id, timeout=60).state.value == "succeeded"

        # The CLI, through the server.
        monkeypatch.setenv("KUBELINE_URL", server.url)
        monkeypatch.setenv("KUBELINE_TOKEN", server.token)
        shown = CliRunner().invoke(cli.app, ["environment", "demo"])
        assert shown.exit_code == 0, shown.output
        assert "environment: ready" in shown.output and "kl-demo" in shown.output and "1.0" in shown.output
        failed = CliRunner().invoke(cli.app, ["environment", "broken"])
        assert failed.exit_code == 1
        assert "environment: failed: pip install of requirements.txt failed:" in failed.output
        assert "kl-missing-zzz" in failed.output
