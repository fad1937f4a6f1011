"""Only the executors the configuration names are registered (no user code in the control plane)."""

from __future__ import annotations

import pathlib

import pydantic
import pytest

from kubeline import bootstrap
from kubeline import settings as settings_

KUBECONFIG = """
apiVersion: v1
kind: Config
clusters: [{name: c, cluster: {server: "https://127.0.0.1:1"}}]
users: [{name: u, user: {token: t}}]
contexts: [{name: c, context: {cluster: c, user: u}}]
current-context: c
"""


@pytest.fixture
def kubeconfig(tmp_path: pathlib.Path) -> pathlib.Path:
    path = tmp_path / "kubeconfig"
    path.write_text(KUBECONFIG)
    return path


def test_the_embedded_default_registers_both_local_executors(tmp_path: pathlib.Path) -> None:
    config = settings_.Settings(home=tmp_path)
    assert config.enabled_executors == ("local", "local-warm")
    assert sorted(bootstrap.executors_for(config)) == ["local", "local-warm"]


def test_a_kubernetes_server_registers_no_local_executor(tmp_path: pathlib.Path, kubeconfig: pathlib.Path) -> None:
    config = settings_.Settings(home=tmp_path, executor="kubernetes", kubernetes_kubeconfig=kubeconfig)
    found = bootstrap.executors_for(config)
    assert list(found) == ["kubernetes"]
    assert bootstrap.default_executor(config) == "kubernetes"


def test_executors_named_in_the_setting(tmp_path: pathlib.Path, kubeconfig: pathlib.Path,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KUBELINE_EXECUTORS", "kubernetes, local")
    config = settings_.Settings(home=tmp_path, executor="kubernetes", kubernetes_kubeconfig=kubeconfig)
    assert config.executors == ["kubernetes", "local"]
    assert sorted(bootstrap.executors_for(config)) == ["kubernetes", "local"]
    monkeypatch.setenv("KUBELINE_EXECUTORS", '["local"]')
    config = settings_.Settings(home=tmp_path)
    assert list(bootstrap.executors_for(config)) == ["local"]
    assert bootstrap.default_executor(config) == "local"  # no warm executor to pick


def test_bad_executor_settings_say_what_to_change(tmp_path: pathlib.Path) -> None:
    with pytest.raises(pydantic.ValidationError, match="KUBELINE_EXECUTOR=kubernetes is not in KUBELINE_EXECUTORS=local"):
        settings_.Settings(home=tmp_path, executor="kubernetes", executors=["local"])
    with pytest.raises(pydantic.ValidationError, match="executors"):
        settings_.Settings(home=tmp_path, executors="local,podman")
    with pytest.raises(pydantic.ValidationError, match="KUBELINE_SECRET_KEY: the server's KUBELINE_"):
        settings_.Settings(home=tmp_path, stage_env_passthrough="HTTPS_PROXY,KUBELINE_SECRET_KEY")
