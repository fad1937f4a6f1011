"""A run whose log is gone says so: 410 problem+json with the reason from the API, and a non-zero
exit with that reason from ``kubeline logs`` (local and through the server) and ``kubeline k8s
logs`` (through a Kubernetes API Service proxy in front of the real server); never an empty 200."""

from __future__ import annotations

import http.server
import os
import pathlib
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

import httpx
import pytest

from kubeline import client as client_
from kubeline import testing
from kubeline.domain import errors

KUBELINE = pathlib.Path(sys.executable).parent / "kubeline"
pytestmark = pytest.mark.slow


def finished_run(client: client_.Client) -> str:
    run_id = client.create_run("hello", {"count": 2}).id
    deadline = time.monotonic() + 60
    while client.run(run_id).state.value not in ("succeeded", "failed"):
        assert time.monotonic() < deadline
        time.sleep(0.1)
    assert "hello world 2" in client.logs(run_id)
    return run_id


def cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(KUBELINE), *args], env=env, capture_output=True, text=True, timeout=120)


def test_deleted_log_answers_410_with_the_reason(server, client, settings) -> None:  # type: ignore[no-untyped-def]
    run_id = finished_run(client)
    kept = finished_run(client)
    assert client.logs(kept)  # the other run's log is untouched below
    shutil.rmtree(settings.home / "logs" / run_id)

    response = httpx.get(f"{server.url}/api/v1/runs/{run_id}/logs", headers=server.headers)
    assert response.status_code == 410
    assert response.headers["content-type"] == "application/problem+json"
    problem = response.json()
    assert problem["status"] == 410 and problem["type"].endswith("/gone")
    assert f"the log of run {run_id} is gone" in problem["detail"] and "greet#1" in problem["detail"]
    assert "data volume was replaced" in problem["detail"]
    assert httpx.get(f"{server.url}/api/v1/runs/{run_id}/logs?stage=greet", headers=server.headers).status_code == 410
    assert httpx.get(f"{server.url}/api/v1/runs/{run_id}/logs/stream", headers=server.headers).status_code == 410
    status = httpx.get(f"{server.url}/api/v1/runs/{run_id}/logs/status", headers=server.headers).json()
    assert status["state"] == "gone" and "is gone" in status["detail"]
    assert httpx.get(f"{server.url}/api/v1/runs/{kept}/logs/status", headers=server.headers).json() == {"state": "available", "detail": ""}
    with pytest.raises(errors.GoneError, match="is gone"):
        client.logs(run_id)

    env = {k: v for k, v in os.environ.items() if not k.startswith("KUBELINE_")}
    remote = cli({**env, "KUBELINE_URL": server.url, "KUBELINE_TOKEN": server.token, "KUBELINE_HOME": str(settings.home.parent / "else")}, "logs", run_id)
    assert remote.returncode == 1 and "is gone" in remote.stderr and remote.stdout == ""
    followed = cli({**env, "KUBELINE_URL": server.url, "KUBELINE_TOKEN": server.token, "KUBELINE_HOME": str(settings.home.parent / "else")},
                   "logs", run_id, "--follow")
    assert followed.returncode == 1 and "is gone" in followed.stderr
    local_env = {**env, "KUBELINE_HOME": str(settings.home), "KUBELINE_DATABASE_URL": settings.database}
    local = cli(local_env, "logs", run_id)
    assert local.returncode == 1 and "is gone" in local.stderr and local.stdout == ""
    assert cli(local_env, "logs", kept).returncode == 0


def test_a_run_that_wrote_nothing_yet_is_not_gone(server, client) -> None:  # type: ignore[no-untyped-def]
    run_id = client.create_run("slow").id
    deadline = time.monotonic() + 60
    while "started" not in client.logs(run_id):
        assert time.monotonic() < deadline
        time.sleep(0.1)
    assert httpx.get(f"{server.url}/api/v1/runs/{run_id}/logs/status", headers=server.headers).json()["state"] == "available"
    client.cancel(run_id)


class _ServiceProxy(http.server.BaseHTTPRequestHandler):
    """The Kubernetes API server's parts ``kubeline k8s logs`` uses: PipelineRuns (none here, 404)
    and the Service proxy, forwarded to a real Kubeline server."""

    target = ""
    prefix = "/api/v1/namespaces/team/services/kubeline:http/proxy/"

    def do_GET(self) -> None:
        path = urllib.parse.unquote(self.path)
        if path.startswith(self.prefix):
            url = self.target + "/" + path[len(self.prefix):]
            forwarded = {k: v for k, v in self.headers.items() if k.lower() == "x-kubeline-token"}
            try:
                with urllib.request.urlopen(urllib.request.Request(url, headers=forwarded), timeout=30) as answer:
                    self._send(answer.status, answer.headers.get("content-type", ""), answer.read())
            except urllib.error.HTTPError as exc:
                self._send(exc.code, exc.headers.get("content-type", ""), exc.read())
            return
        body = b'{"kind":"Status","apiVersion":"v1","status":"Failure","message":"not found","reason":"NotFound","code":404}'
        self._send(404, "application/json", body)

    def _send(self, status: int, kind: str, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        return None


def test_k8s_logs_of_a_gone_log_exits_1_with_the_reason(server, client, settings, tmp_path) -> None:  # type: ignore[no-untyped-def]
    run_id = finished_run(client)
    with testing.http_server(_ServiceProxy, target=server.url) as (url, _handler):
        kubeconfig = tmp_path / "kubeconfig"
        kubeconfig.write_text(f"""
apiVersion: v1
kind: Config
clusters: [{{name: c, cluster: {{server: "{url}"}}}}]
users: [{{name: u, user: {{token: t}}}}]
contexts: [{{name: x, context: {{cluster: c, user: u, namespace: team}}}}]
current-context: x
""")
        env = {k: v for k, v in os.environ.items() if not k.startswith("KUBELINE_")}
        env["KUBECONFIG"] = str(kubeconfig)
        env["KUBELINE_TOKEN"] = server.token
        ok = cli(env, "k8s", "logs", run_id, "-n", "team", "--kubeconfig", str(kubeconfig))
        assert ok.returncode == 0 and "hello world 2" in ok.stdout, ok.stderr
        shutil.rmtree(settings.home / "logs" / run_id)
        gone = cli(env, "k8s", "logs", run_id, "-n", "team", "--kubeconfig", str(kubeconfig))
        assert gone.returncode == 1 and "is gone" in gone.stderr and "hello" not in gone.stdout, gone.stderr
