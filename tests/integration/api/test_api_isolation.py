"""A server configured for Kubernetes refuses runs that would put user code in its own process."""

from __future__ import annotations

import pathlib

import httpx

from kubeline import settings as settings_
from kubeline import testing


def _call(server: testing.ServerThread, method: str, path: str, **kwargs: object) -> httpx.Response:
    with server.http() as http:
        return http.request(method.upper(), path, **kwargs)  # type: ignore[arg-type]


KUBECONFIG = """
apiVersion: v1
kind: Config
clusters: [{name: c, cluster: {server: "https://127.0.0.1:1"}}]
users: [{name: u, user: {token: t}}]
contexts: [{name: c, context: {cluster: c, user: u}}]
current-context: c
"""


def test_a_kubernetes_server_refuses_a_pipeline_asking_for_local(tmp_path: pathlib.Path, database_url: str) -> None:
    (tmp_path / "kubeconfig").write_text(KUBECONFIG)
    folder = tmp_path / "pipelines" / "sneaky"
    folder.mkdir(parents=True)
    (folder / "pipeline.yaml").write_text("executor: local\nstages: [{id: main, type: shell, command: env}]\n")
    config = settings_.Settings(home=tmp_path / "home", database_url=database_url, pipelines_dir=folder.parent,
                                executor="kubernetes", kubernetes_kubeconfig=tmp_path / "kubeconfig")
    with testing.ServerThread(config) as server:
        answer = _call(server, "post", "/api/v1/runs", json={"pipeline": "sneaky"})
        assert answer.status_code == 422, answer.text
        (problem,) = answer.json()["problems"]
        assert problem["location"] == "executor"
        assert problem["message"] == ("stage 'main' asks for executor 'local', which this server does not run "
                                      "(it runs: kubernetes)")
        assert "KUBELINE_EXECUTORS" in problem["hint"]
        assert _call(server, "get", "/api/v1/runs").json()["items"] == []


def test_a_posted_spec_is_refused_what_a_folder_is(server: testing.ServerThread, tmp_path: pathlib.Path) -> None:
    spec = {"requirements": "/etc/passwd", "stages": [{"id": "a", "file": "../../../etc/passwd"}]}
    answer = _call(server, "post", "/api/v1/pipelines/validate", json={"spec": spec})
    assert answer.status_code == 200 and answer.json()["valid"] is False
    assert [(p["location"], p["message"]) for p in answer.json()["problems"]] == [
        ("requirements", "'/etc/passwd' is outside the pipeline folder"),
        ("stages[0].file", "'../../../etc/passwd' is outside the pipeline folder")]
    files = {"pipeline.yaml": "stages: [{id: a, file: ../../../etc/passwd}]"}
    answer = _call(server, "post", "/api/v1/pipelines/validate", json={"files": files})
    assert [(p["location"], p["message"]) for p in answer.json()["problems"]] == [
        ("stages[0].file", "'../../../etc/passwd' is outside the pipeline folder")]


def test_script_requirements_are_package_names_only(server: testing.ServerThread) -> None:
    for bad in ["-r /etc/passwd", "--index-url http://127.0.0.1:1/simple", "requests\n-r /etc/shadow"]:
        answer = _call(server, "post", "/api/v1/scripts", json={"code": "print(1)", "requirements": [bad]})
        assert answer.status_code == 422, (bad, answer.text)
        assert "is not a package requirement" in answer.text
    assert _call(server, "get", "/api/v1/runs").json()["items"] == []


def test_the_attempt_upload_has_its_own_listener_and_nothing_else(server: testing.ServerThread) -> None:
    assert server.upload_url and server.upload_url != server.url
    io = "/api/v1/attempts/nope/io"
    on_api = _call(server, "put", io, json={"outputs": {}})
    assert on_api.status_code in (404, 405), on_api.text  # the API port does not take uploads
    on_upload = httpx.put(server.upload_url + io, json={"outputs": {}}, headers={"Authorization": "Bearer x"})
    assert on_upload.status_code == 401 and "KUBELINE_ATTEMPT_TOKEN" in on_upload.text
    assert httpx.get(server.upload_url + "/healthz").status_code == 200
    admin = {"Authorization": f"Bearer {server.token}"}
    for path in ("/api/v1/runs", "/api/v1/pipelines", "/api/v1/secrets", "/metrics", "/readyz",
                 "/api/v1/openapi.json", "/api/v1/docs"):
        assert httpx.get(server.upload_url + path, headers=admin).status_code == 404, path
    assert httpx.post(server.upload_url + "/api/v1/scripts", json={"code": "print(1)"}, headers=admin).status_code == 404
    assert _call(server, "get", "/api/v1/openapi.json").json()["paths"].keys().isdisjoint({"/api/v1/attempts/{attempt_id}/io"})


def test_kubeline_server_opens_the_upload_port(tmp_path: pathlib.Path) -> None:
    env = {"KUBELINE_HOME": str(tmp_path / "home"), "KUBELINE_SECRET_KEY": ""}
    with testing.ServerProcess(env=env) as server:
        assert httpx.get(server.upload_url + "/healthz").status_code == 200
        assert httpx.get(server.upload_url + "/api/v1/runs", headers={"Authorization": f"Bearer {server.token}"}).status_code == 404
        assert httpx.get(server.url + "/api/v1/runs", headers={"Authorization": f"Bearer {server.token}"}).status_code == 200
