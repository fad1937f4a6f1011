"""Stages on ``local`` and ``local-warm`` start from a clean environment: the allow-list of
``executors.local_env`` plus what the spec gives, never the server's own variables."""

from __future__ import annotations

import json
import pathlib

import pytest
from cryptography import fernet

from kubeline.domain import states
from kubeline.executors import local_env

pytestmark = pytest.mark.slow

SERVER_ONLY = {
    "KUBELINE_SECRET_KEY": fernet.Fernet.generate_key().decode(),
    "KUBELINE_DATABASE_URL": "postgresql://kubeline:db-password-123@db:5432/kubeline",
    "PGPASSWORD": "db-password-123",
    "AWS_ACCESS_KEY_ID": "AKIASERVERONLY",
    "AWS_SECRET_ACCESS_KEY": "aws-secret-of-the-server",
    "GOOGLE_APPLICATION_CREDENTIALS": "/var/run/gcp.json",
    "HTTPS_PROXY": "http://user:proxy-password@proxy:3128",
    "SOME_CI_TOKEN": "ci-token-of-the-server",
}
DUMP = """
import json, os, pathlib, sys
from kubeline import task
proc = pathlib.Path("/proc/self/environ").read_bytes().decode(errors="replace").split("\\0")
pathlib.Path(task.inputs()["dump"], os.environ["KUBELINE_STAGE"] + ".json").write_text(
    json.dumps({"env": dict(os.environ), "proc": [p for p in proc if p]}))
"""


async def test_a_stage_sees_the_allow_list_and_its_spec_never_the_servers_variables(
        open_app, make_pipeline, run_folder, monkeypatch: pytest.MonkeyPatch, tmp_path: pathlib.Path) -> None:
    for name, value in SERVER_ONLY.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("LC_ALL", "C.UTF-8")
    monkeypatch.setenv("TZ", "Europe/Berlin")
    dump = tmp_path / "dump"
    dump.mkdir()
    folder = make_pipeline("envdump", {
        "pipeline.yaml": """
            env: {REGION: eu}
            secrets: [API_TOKEN]
            inputs: {dump: {type: string}, day: {type: string, default: monday}}
            stages:
              - {id: cold, file: main.py, executor: local}
              - {id: warm, file: main.py}
        """,
        "main.py": DUMP,
    })
    async with open_app() as app:
        await app.secrets.set("API_TOKEN", "stage-token-456")
        run = await run_folder(app, folder, inputs={"dump": str(dump)})
        assert run.state is states.RunState.SUCCEEDED, run.error
        used = {a.stage_id: a.executor for a in await app.store.list_attempts(run.id)}
    assert used == {"cold": "local", "warm": "local-warm"}
    for stage in ("cold", "warm"):
        seen = json.loads((dump / f"{stage}.json").read_text())
        env, proc = seen["env"], "\n".join(seen["proc"])
        for name, value in SERVER_ONLY.items():
            assert name not in env, (stage, name)
            assert value not in proc, (stage, name)  # not even in the process's initial environment
        assert env["REGION"] == "eu" and env["API_TOKEN"] == "stage-token-456"  # the spec's env, secrets
        assert env["day"] == "monday"  # inputs with env-safe names
        assert env["LC_ALL"] == "C.UTF-8" and env["TZ"] == "Europe/Berlin"
        assert env["KUBELINE_STAGE"] == stage and env["KUBELINE_RUN_ID"] == run.id
        assert env["PYTHONUNBUFFERED"] == "1" and env["VIRTUAL_ENV"] and env["PATH"].startswith(env["VIRTUAL_ENV"])
        unexpected = {k for k in env if not local_env.allowed(k) and not k.startswith("KUBELINE_")}
        made_by_the_shell = {"PWD", "OLDPWD"}  # the supervisor's ``cd``
        assert unexpected <= {"REGION", "API_TOKEN", "dump", "day", "PYTHONUNBUFFERED", "VIRTUAL_ENV",
                              *made_by_the_shell}, unexpected


async def test_passthrough_names_reach_stages(open_app, make_pipeline, run_folder,
                                              monkeypatch: pytest.MonkeyPatch, tmp_path: pathlib.Path) -> None:
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy:3128")
    monkeypatch.setenv("KUBELINE_STAGE_ENV_PASSTHROUGH", "HTTPS_PROXY")
    dump = tmp_path / "dump"
    dump.mkdir()
    folder = make_pipeline("passthrough", {
        "pipeline.yaml": "inputs: {dump: {type: string}}\nstages: [{id: cold, file: main.py, executor: local}]\n",
        "main.py": DUMP})
    async with open_app() as app:
        run = await run_folder(app, folder, inputs={"dump": str(dump)})
        assert run.state is states.RunState.SUCCEEDED, run.error
    assert json.loads((dump / "cold.json").read_text())["env"]["HTTPS_PROXY"] == "http://proxy:3128"
