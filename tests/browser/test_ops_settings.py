"""Notifications and Cleanup pages in a real Chromium against a real server: the rules in effect
with every secret masked, deliveries sent to a receiver on 127.0.0.1 and failed ones with their
error; the retention plan with counts and sizes, the server's refusal of a policy that would
delete every run, apply after an explicit confirmation, force as a separate choice; what a viewer
sees of both. Also the pipeline page's environment state."""

from __future__ import annotations

import http.server
import pathlib
import textwrap
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from tests.browser.conftest import BOTH_DATABASES, axe_violations, screenshot, set_theme
from tests.browser.test_ops_pages import tab_as  # noqa: F401 - a fixture
from tests.browser.test_pages import api, run_and_wait

from kubeline import settings as settings_
from kubeline import testing

pytestmark = pytest.mark.slow

PATH_SECRET = "T0/B0/path-token-of-the-hook"
SMTP_PASSWORD = "smtp-password-never-shown"


class Receiver(http.server.BaseHTTPRequestHandler):
    seen: list[str] = []

    def do_POST(self) -> None:  # the http.server hook
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        Receiver.seen.append(self.path)
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def receiver() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def server(tmp_path: pathlib.Path, receiver: str, database_url: str) -> Iterator[testing.ServerThread]:
    specs = {
        "alerting": f"""
            expected_duration: 600
            notifications:
              - {{channel: webhook, url: "{receiver}/{PATH_SECRET}", on: [failure]}}
              - {{channel: slack, url_secret: MISSING_SLACK_URL, on: [failure, recovery]}}
            stages: [{{id: s, type: shell, command: 'echo failing; exit 2'}}]
        """,
        "keep2": "retention: {max_runs: 2}\nstages: [{id: a, type: shell, command: 'echo kept'}]\n",
        "wipe": "retention: {max_age_days: 0.00001}\nstages: [{id: a, type: shell, command: 'echo wiped'}]\n",
    }
    root = tmp_path / "pipelines"
    for name, text in specs.items():
        (root / name).mkdir(parents=True)
        (root / name / "pipeline.yaml").write_text(textwrap.dedent(text))
    for name, spec in {"pyjob": None, "oldpy": 'python_version: "3.2"\n'}.items():  # environments pre-heated
        (root / name).mkdir()
        (root / name / "main.py").write_text("print('hi')\n")
        if spec:
            (root / name / "pipeline.yaml").write_text(spec)
    config = settings_.Settings(
        home=tmp_path / "home", database_url=database_url, pipelines_dir=root, notify_timeout=2.0,
        notifications=[{"channel": "email", "to": ["ops@example.org"], "on": ["failure"]}],
        smtp_host="127.0.0.1", smtp_port=9, smtp_username="kube", smtp_password=SMTP_PASSWORD,  # type: ignore[arg-type]
        uv_cache_dir=pathlib.Path("/tmp/kubeline-test-venvs/uv-cache"))
    with testing.ServerThread(config) as running:
        yield running


def _until(check: Any, timeout: float = 30) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(0.2)
    raise AssertionError("the condition was not met in time")


def test_notifications_show_rules_masked_and_deliveries_with_their_errors(page, server):
    failed = run_and_wait(server, "alerting")
    assert failed["state"] == "failed"
    _until(lambda: any(p.startswith("/T0/B0/") for p in Receiver.seen))
    _until(lambda: {d["channel"] for d in api(server, "GET", "/notifications").json()["items"] if d["attempts"]}
           >= {"webhook", "slack", "email"})
    page.goto("/")
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Notifications").click()
    page.get_by_role("heading", name="Notifications", exact=True).wait_for()
    global_rules = page.get_by_role("table", name="Global notification rules")
    global_rules.get_by_text("ops@example.org").wait_for()
    rules = page.get_by_role("table", name="Notification rules of alerting")
    assert f"{server.settings.public_url}" not in rules.inner_text()
    assert "http://127.0.0.1:" in rules.inner_text() and "/***" in rules.inner_text()
    assert "secret:MISSING_SLACK_URL" in rules.inner_text()
    assert "slow after 600 s" in page.get_by_role("region", name="Rules of alerting").inner_text()
    assert "with a login (password set, never shown)" in page.get_by_test_id("smtp").inner_text()

    deliveries = page.get_by_role("table", name="Deliveries")
    deliveries.get_by_text("sent", exact=True).wait_for()
    text = deliveries.inner_text()
    assert "MISSING_SLACK_URL" in text and "not found" in text  # the slack URL secret was never stored
    assert "SMTP 127.0.0.1:9 unreachable" in text
    assert failed["id"] in text

    # an admin sends a test through one rule and sees the outcome in place
    before = len(Receiver.seen)
    rules.get_by_role("button", name="Send test: alerting rule 1 (webhook)").click()
    rules.get_by_role("status").get_by_text("sent", exact=True).wait_for()
    assert len(Receiver.seen) == before + 1
    rules.get_by_role("button", name="Send test: alerting rule 2 (slack)").click()
    rules.get_by_role("status").filter(has_text="MISSING_SLACK_URL").wait_for()
    content = page.content()
    assert "path-token-of-the-hook" not in content and SMTP_PASSWORD not in content
    for theme in ("light", "dark"):
        set_theme(page, theme)
        assert axe_violations(page) == [], theme
        screenshot(page, f"notifications-{theme}")


@BOTH_DATABASES
def test_cleanup_plan_refusal_confirmation_and_force(page, server):
    kept = [run_and_wait(server, "keep2")["id"] for _ in range(3)]
    wiped = run_and_wait(server, "wipe")["id"]
    time.sleep(1.5)  # 'wipe' is now older than its max_age_days
    page.goto("/cleanup")
    refused = page.get_by_test_id("refused")
    refused.get_by_text("wipe: the policy would delete all 1 finished runs").wait_for()
    summary = page.get_by_role("table", name="What would go, per pipeline and kind")
    row = summary.locator('tr[data-group="keep2/run"]')
    assert row.locator("td").nth(2).inner_text() == "1"
    assert row.locator("td").nth(3).inner_text().endswith("B")  # its log's size
    assert "wipe" not in summary.inner_text()
    page.get_by_role("table", name="Items that would go").get_by_text(kept[0]).wait_for()
    for theme in ("light", "dark"):
        set_theme(page, theme)
        assert axe_violations(page) == [], theme
        screenshot(page, f"cleanup-{theme}")

    # apply needs an explicit confirmation; by keyboard, the safe choice has the focus and the
    # focus comes back to the button that opened it
    focused = "() => document.activeElement && document.activeElement.textContent"
    page.get_by_role("button", name="Apply cleanup…").focus()
    page.keyboard.press("Enter")
    confirm = page.get_by_role("group", name="Confirm cleanup")
    confirm.wait_for()
    assert page.evaluate(focused) == "Keep everything"
    page.keyboard.press("Enter")
    confirm.wait_for(state="detached")
    assert page.evaluate(focused) == "Apply cleanup…"
    assert len(api(server, "GET", "/runs", params={"pipeline": "keep2"}).json()["items"]) == 3
    page.get_by_role("button", name="Apply cleanup…").click()
    confirm.get_by_role("button", name="Delete 1 item").click()
    applied = page.get_by_test_id("applied")
    applied.get_by_text("Removed 1 item").wait_for()
    assert "wipe: the policy would delete all 1 finished runs" in page.get_by_role("region", name="Last cleanup").inner_text()
    assert [r["id"] for r in api(server, "GET", "/runs", params={"pipeline": "keep2"}).json()["items"]] == kept[:0:-1]
    assert api(server, "GET", f"/runs/{wiped}").status_code == 200  # refused without force

    # force is a separate choice: the plan then lists wipe's run, and applying it still asks first
    page.get_by_label("Force: also delete every finished run of the refused pipelines").check()
    page.get_by_role("table", name="Items that would go").get_by_text(wiped).wait_for()
    assert page.get_by_role("region", name="Plan, forced").count() == 1
    page.get_by_role("button", name="Apply cleanup…").click()
    assert "every finished run" in confirm.inner_text()
    confirm.get_by_role("button", name="Delete 1 item").click()
    _until(lambda: api(server, "GET", f"/runs/{wiped}").status_code == 404)
    page.get_by_test_id("nothing").wait_for()
    screenshot(page, "cleanup")


def test_a_viewer_reads_notifications_and_cannot_clean_up(tab_as, server):  # noqa: F811 - the fixture
    run_and_wait(server, "keep2")
    tab = tab_as(server, "vic", "viewer")
    tab.goto("/notifications")
    tab.get_by_role("table", name="Notification rules of alerting").wait_for()
    nav = tab.get_by_role("navigation", name="Main")
    assert nav.get_by_role("link", name="Notifications").count() == 1
    assert nav.get_by_role("link", name="Cleanup").count() == 0
    assert tab.get_by_role("button", name="Send test").count() == 0
    tab.goto("/cleanup")
    tab.get_by_role("alert").filter(has_text="admin").wait_for()
    assert tab.get_by_role("button", name="Apply cleanup…").count() == 0
    status = tab.evaluate("""async () => {
        const csrf = (await (await fetch('/api/v1/auth/me')).json()).csrf_token;
        return (await fetch('/api/v1/retention/apply?force=true', {method: 'POST', headers: {'x-csrf-token': csrf}})).status; }""")
    assert status == 403
    assert len(api(server, "GET", "/runs", params={"pipeline": "keep2"}).json()["items"]) == 1


def test_pipeline_pages_show_environment_ready_or_failed_with_the_reason(page, server):
    page.goto("/pipelines/oldpy")
    state = page.get_by_role("region", name="Environment and dependencies").get_by_test_id("env-state")
    state.get_by_text("failed", exact=True).wait_for(timeout=60_000)  # the section follows the build
    reason = api(server, "GET", "/pipelines/oldpy/environment").json()["reason"]
    assert "3.2" in reason and state.inner_text().endswith(reason)
    title_line = page.get_by_test_id("env-state").first  # the pipeline's summary line follows the build too
    title_line.get_by_text("failed", exact=True).wait_for(timeout=30_000)
    page.goto("/pipelines/pyjob")
    deps = page.get_by_role("region", name="Environment and dependencies")
    deps.get_by_test_id("env-state").get_by_text("ready", exact=True).wait_for(timeout=120_000)
    deps.get_by_role("region", name="Environment of stages main").get_by_text("No packages installed.").wait_for()
    for theme in ("light", "dark"):
        set_theme(page, theme)
        assert axe_violations(page) == [], theme
