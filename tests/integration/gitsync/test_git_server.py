"""Git sync in a real server: the API (status, sync now), signed push webhooks in GitHub and
GitLab formats, and runs that record the commit they ran; the CLI's ``kubeline git sync``."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import pathlib
import subprocess
import sys

import httpx
import pytest

from kubeline import settings as settings_
from kubeline import testing

from .conftest import GOOD, Origin

pytestmark = pytest.mark.slow


def test_api_webhooks_and_run_commits(tmp_path: pathlib.Path, origin: Origin, database_url: str) -> None:
    first = origin.commit(GOOD)
    repo = {"name": "team", "url": origin.url, "subdir": "pipelines", "interval": 0, "webhook_secret": "HOOK"}
    settings = settings_.Settings(home=tmp_path / "home", database_url=database_url, git_repos=[repo])
    with testing.ServerThread(settings) as server, server.client(timeout=60) as api:
        api.set_secret("HOOK", "hook-secret")
        base = f"{server.url}/api/v1/git"
        assert httpx.get(base, headers=server.headers).json()["items"][0]["status"] == "never_synced"
        state = httpx.post(f"{base}/team/sync", timeout=60, headers=server.headers).json()
        assert (state["status"], state["good_commit"], state["served_here"]) == ("ok", first, first)
        assert (state["subdir"], state["interval"], state["next_sync_at"], state["ssh"], state["webhook"],
                state["deploy_key_secret"]) == ("pipelines", 0, None, False, True, None)
        assert state["last_sync_at"] is not None
        run = api.wait(api.create_run("hello").id, timeout=120)
        assert (run.state.value, run.git_commit, run.git_source) == ("succeeded", first, "team")

        second = origin.commit({"pipelines/hello/main.py": "print('second')\n"})
        body = json.dumps({"ref": "refs/heads/main", "after": second}).encode()
        signature = "sha256=" + hmac.new(b"hook-secret", body, hashlib.sha256).hexdigest()
        bad = httpx.post(f"{base}/team/webhook", content=body, headers={"X-Hub-Signature-256": "sha256=00"})
        assert bad.status_code == 401 and "signature missing or wrong" in bad.json()["detail"]
        assert httpx.post(f"{base}/team/webhook", content=body).status_code == 401
        hook = httpx.post(f"{base}/team/webhook", content=body, headers={"X-Hub-Signature-256": signature},
                          timeout=60).json()
        assert hook["synced"] and hook["state"]["good_commit"] == second
        assert api.wait(api.create_run("hello").id, timeout=120).git_commit == second
        assert api.run(run.id).git_commit == first  # the earlier run keeps the commit it ran

        third = origin.commit({"pipelines/hello/main.py": "print('third')\n"})
        other = httpx.post(f"{base}/team/webhook", json={"ref": "refs/heads/dev"},
                           headers={"X-Gitlab-Token": "hook-secret"}).json()
        assert other == {"synced": False, "reason": "push to 'refs/heads/dev', not refs/heads/main: ignored",
                         "state": None}
        gitlab = httpx.post(f"{base}/team/webhook", json={"ref": "refs/heads/main", "object_kind": "push"},
                            headers={"X-Gitlab-Token": "hook-secret"}, timeout=60).json()
        assert gitlab["state"]["good_commit"] == third
        assert httpx.post(f"{base}/nope/sync", headers=server.headers).status_code == 404


def test_cli_git_sync_and_status(tmp_path: pathlib.Path, origin: Origin) -> None:
    first = origin.commit(GOOD)
    env = {k: v for k, v in os.environ.items() if not k.startswith("KUBELINE_")}
    env.update(KUBELINE_HOME=str(tmp_path / "home"), KUBELINE_GIT_REPOS=json.dumps(
        [{"name": "team", "url": origin.url.replace("file://", "file://"), "subdir": "pipelines"}]))
    kubeline = pathlib.Path(sys.executable).with_name("kubeline")

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(kubeline), *args], env=env, capture_output=True, text=True, timeout=120)

    done = cli("git", "sync", "team", "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["good_commit"] == first
    origin.commit({"pipelines/hello/pipeline.yaml": "stages: [{id: x, type: nope}]"})
    done = cli("git", "sync", "team")
    assert done.returncode == 1 and "invalid" in done.stdout and "unknown stage type 'nope'" in done.stdout
    status = cli("git", "status", "--json")
    assert json.loads(status.stdout)["good_commit"] == first
    listed = json.loads(cli("git", "status", "-o", "json").stdout)
    assert [(r["name"], r["good_commit"]) for r in listed] == [("team", first)]
    assert first in cli("git", "status", "-o", "wide").stdout  # a commit id whole, never cut
    env["KUBELINE_GIT_REPOS"] = json.dumps([{"name": "team", "url": "x", "subdir": "../up"}])
    bad = cli("git", "status")
    assert bad.returncode == 1 and "KUBELINE_GIT_REPOS[0]" in bad.stdout + bad.stderr
    assert "leaves the repository" in bad.stdout + bad.stderr
