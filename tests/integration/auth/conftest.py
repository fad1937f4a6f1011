"""A real ``kubeline server`` with authentication on (thread, 127.0.0.1), on SQLite and PostgreSQL,
and users of each role with their personal tokens."""

from __future__ import annotations

import dataclasses
import pathlib
from collections.abc import Iterator

import pytest

from kubeline import settings as settings_
from kubeline import testing

PIPELINES = {
    "hello": "tags: [team-a]\nstages:\n  - {id: greet, type: shell, command: 'echo hello'}\n",
    "other": "tags: [team-b]\nstages:\n  - {id: greet, type: shell, command: 'echo other'}\n",
}


@dataclasses.dataclass(frozen=True)
class Identities:
    viewer: str
    operator: str
    admin: str
    scoped: str  # an admin-role token limited to the pipeline "other"


@pytest.fixture
def auth_settings(tmp_path: pathlib.Path, database_url: str) -> settings_.Settings:
    root = tmp_path / "pipelines"
    for name, spec in PIPELINES.items():
        (root / name).mkdir(parents=True)
        (root / name / "pipeline.yaml").write_text(spec)
    return settings_.Settings(home=tmp_path / "home", database_url=database_url, pipelines_dir=root,
                              scripts_enabled=True, login_lock_after=3, login_lock_seconds=2)


@pytest.fixture
def api_server(auth_settings: settings_.Settings) -> Iterator[testing.ServerThread]:
    """An ``api``-role server: runs are queued, never dispatched (nothing runs while routes are probed)."""
    with testing.ServerThread(auth_settings, role="api") as running:
        yield running


@pytest.fixture
def identities(api_server: testing.ServerThread) -> Identities:
    return Identities(viewer=api_server.login_as("vera", "viewer"), operator=api_server.login_as("otto", "operator"),
                      admin=api_server.login_as("ada", "admin"),
                      scoped=api_server.login_as("sam", "admin", pipelines=["other"]))
