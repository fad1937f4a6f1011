"""A stage that hands a secret back as data: the value is in no API response, log file or database
row (SQLite file bytes; PostgreSQL through ``pg_dump``). Its log and outputs show ``***``."""

from __future__ import annotations

import glob
import pathlib
import subprocess
import textwrap

import httpx
import pytest
import sqlalchemy as sa

from kubeline import settings as settings_
from kubeline import testing

pytestmark = pytest.mark.slow
SECRET = "tok-9f2c1e7d-never-stored"
PIPELINE = """
    secrets: [TOKEN]
    stages:
      - {id: echo, file: echo.py}
      - {id: again, file: again.py, dependsOn: [echo], inputs: {got: "${stages.echo.outputs.echo}"}}
      - {id: fail, file: fail.py, dependsOn: [again]}
"""
ECHO = """
    import os
    from kubeline import task
    token = os.environ["TOKEN"]
    print("the token is", token)
    task.set_output("echo", token)
    task.set_output("nested", {"list": [token, "x" + token + "y"], token: True})
    task.set_route(token)
"""
AGAIN = """
    from kubeline import task
    task.set_output("echoed", task.input("got"))
"""
FAIL = """
    import os, sys
    sys.exit("bad token " + os.environ["TOKEN"])
"""


def database_text(database_url: str, home: pathlib.Path) -> str:
    url = sa.make_url(database_url)
    if url.get_backend_name() == "sqlite":
        return "".join(pathlib.Path(f).read_bytes().decode("latin-1") for f in glob.glob(f"{url.database}*"))
    dumps = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_dump"), key=lambda p: int(p.split("/")[-3]))
    if not dumps:
        pytest.fail("pg_dump not found next to the PostgreSQL server the tests started")
    plain = url.set(drivername="postgresql").render_as_string(hide_password=False)
    return subprocess.run([dumps[-1], "--data-only", plain], check=True, capture_output=True, text=True).stdout


def test_a_secret_written_as_data_never_leaves(tmp_path: pathlib.Path, database_url: str) -> None:
    folder = tmp_path / "pipelines" / "leaky"
    folder.mkdir(parents=True)
    for name, text in {"pipeline.yaml": PIPELINE, "echo.py": ECHO, "again.py": AGAIN, "fail.py": FAIL}.items():
        (folder / name).write_text(textwrap.dedent(text))
    home = tmp_path / "home"
    config = settings_.Settings(home=home, database_url=database_url, pipelines_dir=folder.parent,
                                uv_cache_dir=pathlib.Path("/tmp/kubeline-test-venvs/uv-cache"))
    responses: list[str] = []
    with testing.ServerThread(config) as server, server.client() as api:
        api.set_secret("TOKEN", SECRET)
        run = api.wait(api.create_run("leaky").id, timeout=120)
        assert run.state.value == "failed" and run.error == "stage 'fail' failed: exited with code 1"
        base = f"{server.url}/api/v1"
        paths = [f"/runs/{run.id}", "/runs", f"/runs/{run.id}/outputs", f"/runs/{run.id}/attempts",
                 f"/runs/{run.id}/events", f"/runs/{run.id}/logs", "/pipelines", "/pipelines/leaky/spec", "/secrets"]
        attempts = httpx.get(base + f"/runs/{run.id}/attempts", headers=server.headers).json()["items"]
        paths += [f"/runs/{run.id}/attempts/{a['id']}" for a in attempts]
        paths += [f"/runs/{run.id}/attempts/{a['id']}/outputs" for a in attempts]
        for path in paths:
            answer = httpx.get(base + path, headers=server.headers)
            assert answer.status_code == 200, (path, answer.text)
            responses.append(answer.text)
        outputs = {s.stage_id: s.outputs for s in api.run(run.id).stages or []}
        logs = api.logs(run.id)
    assert outputs["echo"] == {"echo": "***", "nested": {"list": ["***", "x***y"], "***": True}}
    assert outputs["again"] == {"echoed": "***"}
    assert "the token is ***" in logs and "bad token ***" in logs  # the stages did print it
    assert [path for path, text in zip(paths, responses, strict=True) if SECRET in text] == []
    log_files = [p for p in home.rglob("*") if p.is_file() and "logs" in p.parts]
    assert log_files and [p for p in log_files if SECRET.encode() in p.read_bytes()] == []
    others = [p for p in home.rglob("*") if p.is_file() and not p.name.startswith("kubeline.db")]
    assert [p for p in others if SECRET.encode() in p.read_bytes()] == []
    text = database_text(database_url, home)
    assert "x***y" in text  # the outputs are there, masked
    assert SECRET not in text
