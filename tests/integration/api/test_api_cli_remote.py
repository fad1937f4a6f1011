"""``kubeline run|runs|status|logs|cancel`` with KUBELINE_URL: through the server's API."""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys

import pytest

KUBELINE = pathlib.Path(sys.executable).parent / "kubeline"
pytestmark = pytest.mark.slow


@pytest.fixture
def remote_cli(server, tmp_path):  # type: ignore[no-untyped-def]
    env = {k: v for k, v in os.environ.items() if not k.startswith("KUBELINE_")}
    env.update(KUBELINE_URL=server.url, KUBELINE_HOME=str(tmp_path / "elsewhere"), COLUMNS="200",
               KUBELINE_TOKEN=server.token)

    def cli(*args: str, check: int | None = 0) -> subprocess.CompletedProcess[str]:
        done = subprocess.run([str(KUBELINE), *args], env=env, capture_output=True, text=True, timeout=120)
        if check is not None:
            assert done.returncode == check, f"exit {done.returncode}\n{done.stdout}\n{done.stderr}"
        return done

    return cli


@pytest.mark.timeout(360)  # eleven CLI processes and four runs in a row: well past 120 s on a loaded CI machine
def test_run_through_the_server(remote_cli, client, tmp_path):
    done = remote_cli("run", "hello", "-i", "name=cli", "-i", "count=2")
    assert "queued on http://127.0.0.1" in done.stderr and "succeeded" in done.stdout
    assert '"greeted": "cli"' in done.stdout
    run_id = client.runs(pipeline="hello").items[0].id
    assert client.run(run_id).triggered_by.kind == "api"
    followed = remote_cli("run", "hello", "-i", "name=f", "--follow")
    assert "hello f 3" in followed.stdout
    assert remote_cli("run", "flaky", check=1).returncode == 1
    assert "not found" in remote_cli("run", "nope", check=1).stderr
    assert "count" in remote_cli("run", "hello", "-i", "count=x", check=1).stderr
    assert run_id in remote_cli("runs", "--pipeline", "hello").stdout
    assert "greet" in remote_cli("status", run_id).stdout
    assert "hello cli 2" in remote_cli("logs", run_id).stdout
    assert "hello cli 2" in remote_cli("logs", run_id, "--follow").stdout
    assert "already succeeded" in remote_cli("cancel", run_id, check=1).stderr
    assert not (tmp_path / "elsewhere" / "kubeline.db").exists()  # nothing ran locally
