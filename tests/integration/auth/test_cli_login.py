"""``kubeline login`` (password, forced change, token kept 0600) and ``--insecure-no-auth`` off loopback."""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys

KUBELINE = pathlib.Path(sys.executable).parent / "kubeline"


def _env(home: pathlib.Path, url: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KUBELINE_")}
    return {**env, "KUBELINE_HOME": str(home), "KUBELINE_URL": url, "COLUMNS": "200"}


def test_login_with_a_password_keeps_a_token_for_the_cli(api_server, tmp_path) -> None:
    with api_server.http() as admin:
        made = admin.post("/api/v1/users", json={"username": "lena", "role": "operator"}).json()
    once = made["one_time_password"]
    env = _env(tmp_path / "cli-home", api_server.url)
    denied = subprocess.run([str(KUBELINE), "runs"], env=env, capture_output=True, text=True, timeout=60)
    assert denied.returncode == 1 and "log in first" in denied.stderr
    login = subprocess.run([str(KUBELINE), "login", "-u", "lena"], env=env, capture_output=True, text=True,
                           input=f"{once}\nlena's new long password\nlena's new long password\n", timeout=60)
    assert login.returncode == 0, login.stdout + login.stderr
    assert "must be changed" in login.stdout and "logged in to" in login.stdout
    kept = tmp_path / "cli-home" / "credentials.json"
    assert oct(kept.stat().st_mode & 0o777) == "0o600"
    token = json.loads(kept.read_text())[api_server.url]
    assert token.startswith("klt_") and once not in kept.read_text()
    with api_server.http() as admin:
        admin.post("/api/v1/runs", json={"pipeline": "hello"}).raise_for_status()
    listed = subprocess.run([str(KUBELINE), "runs"], env=env, capture_output=True, text=True, timeout=60)
    assert listed.returncode == 0 and "hello" in listed.stdout
    bad = subprocess.run([str(KUBELINE), "login", "--token", "klt_wrong"], env=env, capture_output=True, text=True,
                         timeout=60)
    assert bad.returncode == 1 and "refused the token" in bad.stderr
    out = subprocess.run([str(KUBELINE), "logout"], env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and api_server.url not in json.loads(kept.read_text())


def test_insecure_no_auth_is_refused_off_loopback(tmp_path) -> None:
    env = _env(tmp_path, "")
    done = subprocess.run([str(KUBELINE), "server", "--host", "0.0.0.0", "--port", "0", "--insecure-no-auth"],
                          env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "refusing to listen on 0.0.0.0" in done.stderr
