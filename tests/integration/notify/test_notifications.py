"""Notifications from a real server to real receivers on 127.0.0.1: a signed generic webhook,
Slack and Teams incoming webhooks, email through aiosmtpd with STARTTLS and AUTH; retries with
backoff, a receiver that hangs, an SMTP server that refuses, rate limiting, ``slow`` runs and
``kubeline.task.notify`` from a script (secrets masked)."""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import http.server
import ipaddress
import json
import pathlib
import socket
import ssl
import textwrap
import time
from collections.abc import Iterator
from typing import Any, ClassVar

import pytest
from aiosmtpd import controller as smtp_controller
from aiosmtpd import smtp as aiosmtp
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from kubeline import settings as settings_
from kubeline import testing

pytestmark = pytest.mark.slow


class Receiver(http.server.BaseHTTPRequestHandler):
    seen: ClassVar[list[dict[str, Any]]]
    statuses: ClassVar[list[int]]
    hang: ClassVar[float]

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.seen.append({"path": self.path, "headers": dict(self.headers), "body": json.loads(body)})
        if self.hang:
            time.sleep(self.hang)
        status = self.statuses.pop(0) if self.statuses else 200
        self.send_response(status)
        self.end_headers()
        self.wfile.write(b"oops" if status >= 300 else b"ok")

    def log_message(self, *args: object) -> None:
        pass


class Mailbox:
    def __init__(self) -> None:
        self.messages: list[tuple[list[str], str]] = []

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str, options: Any) -> str:
        if address.endswith("@refuse.test"):
            return "550 5.1.1 mailbox unavailable"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.messages.append((list(envelope.rcpt_tos), envelope.content.decode()))
        return "250 OK"


def _self_signed(folder: pathlib.Path) -> tuple[pathlib.Path, pathlib.Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=1))
            .not_valid_after(now + dt.timedelta(hours=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = folder / "smtp.pem", folder / "smtp.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


@pytest.fixture
def smtp(tmp_path: pathlib.Path) -> Iterator[tuple[int, Mailbox, pathlib.Path]]:
    cert, key = _self_signed(tmp_path)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    mailbox = Mailbox()

    def authenticate(server: Any, session: Any, envelope: Any, mechanism: str, data: Any) -> Any:
        ok = data.login == b"kube" and data.password == b"smtp-pass"
        return aiosmtp.AuthResult(success=ok)

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = smtp_controller.Controller(mailbox, hostname="127.0.0.1", port=port, tls_context=context,
                                        require_starttls=True, authenticator=authenticate, auth_required=True,
                                        auth_require_tls=True)
    server.start()
    try:
        yield port, mailbox, cert
    finally:
        server.stop()


def _pipelines(root: pathlib.Path, *, hook: str, slack: str, teams: str, hang: str, mark: pathlib.Path) -> None:
    specs = {
        "flaky": f"""
            notifications:
              - {{channel: webhook, url: "{hook}/hook", secret: HOOK, on: [failure, success, recovery]}}
              - {{channel: slack, url_secret: SLACK_URL, on: [failure]}}
              - {{channel: teams, url: "{teams}/teams", on: [recovery]}}
              - {{channel: email, to: [ops@example.org], on: [failure]}}
            stages:
              - {{id: check, type: shell, command: 'echo checking the mark; echo "token $TOKEN"; test -f {mark}'}}
            secrets: [TOKEN]
        """,
        "slow": f"""
            expected_duration: 1
            notifications: [{{channel: webhook, url: "{hook}/slow", on: [slow]}}]
            stages: [{{id: nap, type: shell, command: 'sleep 4'}}]
        """,
        "noisy": f"""
            notify_rate_limit: 2
            notifications: [{{channel: webhook, url: "{hook}/noisy", on: [failure]}}]
            stages: [{{id: boom, type: shell, command: 'exit 3'}}]
        """,
        "hangs": f"""
            notifications:
              - {{channel: slack, url: "{hang}/hang", on: [failure]}}
              - {{channel: email, to: [nobody@refuse.test], on: [failure]}}
            stages: [{{id: boom, type: shell, command: 'exit 1'}}]
        """,
        "chat": """
            secrets: [TOKEN]
            notifications: [{channel: slack, url_secret: SLACK_URL, on: [failure]}]
            stages: [{id: main, type: python, file: main.py}]
        """,
    }
    for name, text in specs.items():
        (root / name).mkdir(parents=True)
        (root / name / "pipeline.yaml").write_text(textwrap.dedent(text))
    (root / "chat" / "main.py").write_text(
        "import os\nfrom kubeline import task\ntask.notify(f\"done, token {os.environ['TOKEN']}\")\n")


def _wait(predicate: Any, *, timeout: float = 60) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = predicate()
        if found:
            return found
        time.sleep(0.2)
    raise AssertionError("timed out waiting")


def test_channels_retries_rate_limit_and_bad_receivers(tmp_path: pathlib.Path, database_url: str, smtp: Any) -> None:
    smtp_port, mailbox, cert = smtp
    mark = tmp_path / "mark"
    with testing.http_server(Receiver, seen=[], statuses=[500], hang=0.0) as (hook_url, hook), \
            testing.http_server(Receiver, seen=[], statuses=[], hang=0.0) as (chat_url, chat), \
            testing.http_server(Receiver, seen=[], statuses=[], hang=5.0) as (hang_url, hanging):
        _pipelines(tmp_path / "pipelines", hook=hook_url, slack=chat_url, teams=chat_url, hang=hang_url, mark=mark)
        settings = settings_.Settings(
            home=tmp_path / "home", database_url=database_url, pipelines_dir=tmp_path / "pipelines",
            public_url="https://kubeline.example.org", notify_timeout=1.5, smtp_host="127.0.0.1",
            smtp_port=smtp_port, smtp_starttls=True, smtp_username="kube", smtp_password="smtp-pass",  # type: ignore[arg-type]
            smtp_from="kubeline@example.org", smtp_cafile=cert,
            uv_cache_dir=pathlib.Path("/tmp/kubeline-test-venvs/uv-cache"))
        with testing.ServerThread(settings) as server, server.client(timeout=60) as api:
            api.set_secret("HOOK", "hook-key")
            api.set_secret("SLACK_URL", f"{chat_url}/slack")
            api.set_secret("TOKEN", "s3cr3t-value")

            failed = api.wait(api.create_run("flaky").id, timeout=60)
            assert failed.state.value == "failed"
            mark.write_text("")
            recovered = api.wait(api.create_run("flaky").id, timeout=60)
            assert recovered.state.value == "succeeded"

            # the generic webhook answered 500 once: that delivery was retried after the backoff, then sent
            def hook_rows() -> list[dict[str, Any]]:
                return [n for run in (failed, recovered) for n in api_deliveries(server, run.id)
                        if n["channel"] == "webhook"]
            rows = _wait(lambda: (r := hook_rows()) and len(r) == 3 and all(n["state"] == "sent" for n in r) and r,
                         timeout=30)
            assert sorted(n["attempts"] for n in rows) == [1, 1, 2]
            assert all(n["last_error"] == "" for n in rows)
            signed = next(r for r in hook.seen if r["path"] == "/hook" and r["body"]["event"] == "failure")
            stamp = signed["headers"]["X-Kubeline-Timestamp"]
            raw = json.dumps(signed["body"]).encode()
            assert signed["headers"]["X-Kubeline-Signature"] == "sha256=" + hmac.new(
                b"hook-key", stamp.encode() + b"." + raw, hashlib.sha256).hexdigest()
            body = signed["body"]
            assert body["link"] == f"https://kubeline.example.org/runs/{failed.id}"
            assert body["failed_stage"] == "check" and "exit" in body["reason"].lower()
            assert "[stdout] checking the mark" in body["log_tail"]
            assert "[stdout] token ***" in body["log_tail"] and "s3cr3t" not in json.dumps(hook.seen)
            _wait(lambda: {r["body"]["event"] for r in hook.seen if r["path"] == "/hook"} >= {"success", "recovery"})

            slack = _wait(lambda: [r for r in chat.seen if r["path"] == "/slack"])
            assert slack[0]["body"]["text"].startswith(f"flaky: run {failed.id} failed")
            teams = _wait(lambda: [r for r in chat.seen if r["path"] == "/teams"])
            assert teams[0]["body"]["@type"] == "MessageCard" and "recovered" in teams[0]["body"]["title"]
            mail = _wait(lambda: mailbox.messages)
            assert mail[0][0] == ["ops@example.org"]
            assert f"Run: https://kubeline.example.org/runs/{failed.id}" in mail[0][1]
            assert "Failed stage: check" in mail[0][1] and "s3cr3t" not in mail[0][1]

            slow = api.create_run("slow")
            seen_slow = _wait(lambda: [r for r in hook.seen if r["path"] == "/slow"], timeout=30)
            assert seen_slow[0]["body"]["event"] == "slow" and "expected 1s" in seen_slow[0]["body"]["reason"]
            assert api.run(slow.id).state.value == "running"  # notified while it runs; the run goes on
            assert api.wait(slow.id, timeout=60).state.value == "succeeded"

            noisy = [api.wait(api.create_run("noisy").id, timeout=60) for _ in range(3)]
            # the notifier may record the three runs' deliveries in any order: whichever comes third is limited
            rows = _wait(lambda: [d for run in noisy for d in api_deliveries(server, run.id)
                                  if d["state"] == "suppressed"])
            assert len(rows) == 1 and "rate limited: 2 notifications" in rows[0]["last_error"]
            assert all(n.state.value == "failed" for n in noisy)

            hung = api.wait(api.create_run("hangs").id, timeout=60)
            assert hung.state.value == "failed"  # the run never waits for its notifications
            rows = _wait(lambda: (r := [n for n in api_deliveries(server, hung.id) if n["attempts"] >= 1])
                         and len(r) == 2 and r)
            by_channel = {n["channel"]: n for n in rows}
            assert by_channel["slack"]["last_error"] == "slack receiver did not answer within 1.5s"
            assert by_channel["slack"]["state"] == "pending"  # retried with backoff
            assert "SMTP 127.0.0.1" in by_channel["email"]["last_error"] and "550" in by_channel["email"]["last_error"]
            assert hanging.seen

            chat_run = api.wait(api.create_run("chat").id, timeout=120)
            assert chat_run.state.value == "succeeded", api.logs(chat_run.id)
            script = _wait(lambda: [r for r in chat.seen if "done, token" in r["body"].get("text", "")], timeout=30)
            assert "done, token ***" in script[0]["body"]["text"]


def api_deliveries(server: testing.ServerThread, run_id: str) -> list[dict[str, Any]]:
    with server.http() as http:
        items: list[dict[str, Any]] = http.get("/api/v1/notifications", params={"run": run_id}).json()["items"]
    return items
