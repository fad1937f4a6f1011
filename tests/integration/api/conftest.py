"""A real ``kubeline server`` (thread, 127.0.0.1, free port) on SQLite and on PostgreSQL,
with a folder of small shell pipelines."""

from __future__ import annotations

import pathlib
import textwrap
from collections.abc import Iterator

import httpx
import pytest

from kubeline import client as client_
from kubeline import settings as settings_
from kubeline import testing

PIPELINES = {
    "hello": """
        inputs: {name: {type: string, default: world}, count: {type: integer, default: 3}}
        stages:
          - id: greet
            type: shell
            command: 'for i in $(seq 1 $count); do echo "hello $name $i"; done; echo "{\\"greeted\\": \\"$name\\"}" > $KUBELINE_OUTPUTS'
    """,
    "flaky": """
        stages:
          - {id: first, type: shell, command: 'echo "{\\"n\\": 1}" > $KUBELINE_OUTPUTS; echo first >> $MARK.count'}
          - {id: second, type: shell, dependsOn: [first], command: 'test -f $MARK'}
    """,
    "slow": """
        stages:
          - {id: wait, type: shell, command: 'echo started; sleep 60'}
    """,
    "chatty": """
        inputs: {lines: {type: integer, default: 200}}
        stages:
          - {id: talk, type: shell, command: 'for i in $(seq 1 $lines); do echo "line $i"; done'}
    """,
}


def write_pipelines(root: pathlib.Path, *, mark: pathlib.Path) -> pathlib.Path:
    for name, spec in PIPELINES.items():
        folder = root / name
        folder.mkdir(parents=True)
        text = textwrap.dedent(spec)
        if name == "flaky":
            text = text.replace("$MARK", str(mark))
        (folder / "pipeline.yaml").write_text(text)
    return root


@pytest.fixture
def settings(tmp_path: pathlib.Path, database_url: str) -> settings_.Settings:
    root = write_pipelines(tmp_path / "pipelines", mark=tmp_path / "mark")
    return settings_.Settings(home=tmp_path / "home", database_url=database_url, pipelines_dir=root,
                              uv_cache_dir=pathlib.Path("/tmp/kubeline-test-venvs/uv-cache"),
                              max_request_bytes=64 * 1024, scripts_enabled=True)


@pytest.fixture
def server(settings: settings_.Settings) -> Iterator[testing.ServerThread]:
    with testing.ServerThread(settings) as running:
        yield running


@pytest.fixture
def client(server: testing.ServerThread) -> Iterator[client_.Client]:
    with server.client() as api:
        yield api


@pytest.fixture
def http(server: testing.ServerThread) -> Iterator[httpx.Client]:
    """Plain HTTP to the server as its admin (``server.headers``)."""
    with server.http() as session:
        yield session
