"""``GET /api/v1/notifications/rules`` in a real server, on SQLite and PostgreSQL: the global rules
and each visible pipeline's, with webhook URLs cut to their host, stored secrets by name and the
SMTP password never returned; deliveries listed with the same masking."""

from __future__ import annotations

import http.server
import json
import pathlib
import textwrap
import threading
import time
from typing import Any

import httpx
import pytest

from kubeline import settings as settings_
from kubeline import testing

pytestmark = pytest.mark.slow

SLACK = "http://127.0.0.1:9/services/T0/B0/slack-path-secret"  # loopback: nothing listens
HOOK = "http://127.0.0.1:9/hook/hook-path-secret?sig=query-secret"
SMTP_PASSWORD = "smtp-password-secret"  # must never be returned
PIPELINES = {
    "alpha": """
        tags: [team-a]
        expected_duration: 60
        notify_rate_limit: 3
        notifications:
          - {channel: webhook, url: "HOOK", secret: SIGN_KEY, on: [failure, recovery]}
          - {channel: email, to: [ops@example.org], on: [failure, slow]}
        stages: [{id: s, type: shell, command: 'exit 1'}]
    """.replace("HOOK", HOOK),
    "beta": """
        tags: [team-b]
        notifications: [{channel: teams, url_secret: TEAMS_URL}]
        stages: [{id: s, type: shell, command: 'true'}]
    """,
    "quiet": """
        stages: [{id: s, type: shell, command: 'true'}]
    """,
}


@pytest.fixture
def server(tmp_path: pathlib.Path, database_url: str) -> Any:
    root = tmp_path / "pipelines"
    for name, spec in PIPELINES.items():
        (root / name).mkdir(parents=True)
        (root / name / "pipeline.yaml").write_text(textwrap.dedent(spec))
    config = settings_.Settings(
        home=tmp_path / "home", database_url=database_url, pipelines_dir=root, notify_timeout=1.0,
        notifications=[{"channel": "slack", "url": SLACK, "on": ["failure", "success"]},
                       {"channel": "webhook", "url_secret": "GLOBAL_HOOK", "secret": "GLOBAL_SIGN"}],
        smtp_host="127.0.0.1", smtp_port=9, smtp_username="kube", smtp_password=SMTP_PASSWORD)  # type: ignore[arg-type]
    with testing.ServerThread(config) as running:
        yield running


def rules(server: Any, token: str) -> httpx.Response:
    return httpx.get(f"{server.url}/api/v1/notifications/rules", headers={"Authorization": f"Bearer {token}"},
                     timeout=30)


def test_rules_in_effect_with_every_secret_masked(server: Any) -> None:
    found = rules(server, server.token)
    assert found.status_code == 200, found.text
    body = found.json()
    assert body["global_rules"] == [
        {"channel": "slack", "on": ["failure", "success"], "target": "http://127.0.0.1:9/***", "signed_with": None},
        {"channel": "webhook", "on": ["failure"], "target": "secret:GLOBAL_HOOK", "signed_with": "GLOBAL_SIGN"}]
    assert [p["pipeline"] for p in body["pipelines"]] == ["alpha", "beta"]  # quiet has no rules of its own
    alpha = body["pipelines"][0]
    assert (alpha["expected_duration"], alpha["rate_limit"]) == (60, 3)
    assert alpha["rules"] == [
        {"channel": "webhook", "on": ["failure", "recovery"], "target": "http://127.0.0.1:9/***", "signed_with": "SIGN_KEY"},
        {"channel": "email", "on": ["failure", "slow"], "target": "ops@example.org", "signed_with": None}]
    assert body["email"] == {"host": "127.0.0.1", "port": 9, "starttls": True, "sender": "kubeline@localhost",
                             "login": True}
    for secret in ("slack-path-secret", "hook-path-secret", "query-secret", SMTP_PASSWORD):
        assert secret not in found.text

    # a token limited to team-a's pipelines sees their rules only (and the global ones)
    scoped = server.login_as("lee", "viewer", pipelines=["tag:team-a"])
    limited = rules(server, scoped).json()
    assert [p["pipeline"] for p in limited["pipelines"]] == ["alpha"]
    assert len(limited["global_rules"]) == 2
    assert httpx.get(f"{server.url}/api/v1/notifications/rules", timeout=30).status_code == 401


def test_deliveries_show_the_masked_target_and_the_last_error(server: Any) -> None:
    with server.http() as http:
        http.put("/api/v1/secrets/SIGN_KEY", json={"value": "sign-key"}).raise_for_status()
        run = http.post("/api/v1/runs", json={"pipeline": "alpha"}).json()
        deadline = time.monotonic() + 60
        hooks: list[dict[str, Any]] = []
        while time.monotonic() < deadline and not hooks:
            items = http.get("/api/v1/notifications", params={"run": run["id"]}).json()["items"]
            hooks = [d for d in items if d["channel"] == "webhook" and d["target"].startswith("http") and d["attempts"]]
            time.sleep(0.3)
        assert hooks, items
        assert hooks[0]["target"] == "http://127.0.0.1:9/***"
        assert "webhook receiver unreachable" in hooks[0]["last_error"]
        listed = http.get("/api/v1/notifications").text
    for secret in ("slack-path-secret", "hook-path-secret", "query-secret"):
        assert secret not in listed


class _Receiver(http.server.BaseHTTPRequestHandler):
    seen: list[tuple[str, dict[str, str], dict[str, Any]]] = []

    def do_POST(self) -> None:  # the http.server hook
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
        _Receiver.seen.append((self.path, dict(self.headers), body))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


def test_an_admin_sends_a_test_through_one_rule(server: Any) -> None:
    _Receiver.seen.clear()
    receiver = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Receiver)
    threading.Thread(target=receiver.serve_forever, daemon=True).start()
    try:
        with server.http() as admin:
            admin.put("/api/v1/secrets/GLOBAL_HOOK",
                      json={"value": f"http://127.0.0.1:{receiver.server_address[1]}/in/hook-secret"}).raise_for_status()
            for name in ("GLOBAL_SIGN", "SIGN_KEY"):
                admin.put(f"/api/v1/secrets/{name}", json={"value": "sign"}).raise_for_status()
            sent = admin.post("/api/v1/notifications/rules/test", json={"index": 1})
            assert sent.json() == {"sent": True, "channel": "webhook", "target": "secret:GLOBAL_HOOK", "error": ""}
            path, headers, body = _Receiver.seen[-1]
            assert path == "/in/hook-secret" and headers["X-Kubeline-Signature"].startswith("sha256=")
            assert (body["event"], body["title"]) == ("test", "(global): test notification from Kubeline")

            refused = admin.post("/api/v1/notifications/rules/test", json={"pipeline": "alpha", "index": 0}).json()
            assert refused["sent"] is False and refused["target"] == "http://127.0.0.1:9/***"
            assert refused["error"] == "webhook receiver unreachable: ConnectError"
            missing = admin.post("/api/v1/notifications/rules/test", json={"pipeline": "quiet", "index": 0})
            assert missing.status_code == 404
            assert "pipeline 'quiet' has 0 notification rule(s); there is no rule 0" in missing.json()["detail"]
            assert admin.post("/api/v1/notifications/rules/test", json={"pipeline": "nope", "index": 0}).status_code == 404
            assert admin.post("/api/v1/notifications/rules/test", json={"index": -1}).status_code == 422
        operator = server.login_as("opa", "operator")
        denied = httpx.post(f"{server.url}/api/v1/notifications/rules/test", json={"index": 1}, timeout=30,
                            headers={"Authorization": f"Bearer {operator}"})
        assert denied.status_code == 403
        assert len(_Receiver.seen) == 1  # nothing recorded or retried: the outbox holds no test
        assert not [d for d in httpx.get(f"{server.url}/api/v1/notifications", headers=server.headers,
                                         timeout=30).json()["items"] if d["event"] == "test"]
    finally:
        receiver.shutdown()
        receiver.server_close()
