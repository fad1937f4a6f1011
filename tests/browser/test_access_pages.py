"""Access control in the browser: an admin manages users, invitations and tokens through the
pages; the audit page filters and pages; a viewer sees no run controls (and the API refuses the
call anyway); an operator by grant sees them only on the pipelines the grant names."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from tests.browser.conftest import BOTH_DATABASES, axe_violations, screenshot, set_theme
from tests.browser.test_pages import api, run_and_wait

pytestmark = pytest.mark.slow


def bearer(server: Any, token: str, path: str) -> int:
    return httpx.get(f"{server.url}/api/v1{path}", headers={"Authorization": f"Bearer {token}"}, timeout=30).status_code


def user_named(server: Any, username: str) -> dict[str, Any]:
    found = [u for u in api(server, "GET", "/users").json() if u["username"] == username]
    assert len(found) == 1, found
    return found[0]


def _until(check: Any, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.1)
    raise AssertionError("the change did not reach the server")


@BOTH_DATABASES
def test_an_admin_manages_users_invitations_and_tokens_in_the_pages(page, server, browser):
    grace_token = server.login_as("grace", "operator")  # a personal token of another user, revoked below
    assert bearer(server, grace_token, "/auth/me") == 200
    page.goto("/users")
    page.get_by_role("table", name="Users").wait_for()
    nav = page.get_by_role("navigation", name="Main")
    for link in ("Users", "Tokens", "Audit"):
        assert nav.get_by_role("link", name=link).count() == 1

    # create a user with a role and a grant: the one-time password is shown once and works
    form = page.get_by_role("form", name="Create a user")
    form.get_by_label("Username").fill("lin")
    form.get_by_label("Role", exact=True).select_option("viewer")
    form.get_by_label("Grants (optional)").fill("flaky=operator, tag:sales=operator")
    form.get_by_role("button", name="Create user").click()
    once = page.get_by_test_id("one-time-password")
    once.wait_for()
    lin = user_named(server, "lin")
    assert lin["role"] == "viewer"
    assert {(g["target"], g["role"]) for g in lin["grants"]} == {("flaky", "operator"), ("tag:sales", "operator")}
    login = httpx.post(f"{server.url}/api/v1/auth/login", json={"username": "lin", "password": once.inner_text()}, timeout=30)
    assert login.status_code == 200 and login.json()["must_change_password"] is True
    row = page.get_by_role("table", name="Users").locator('tr[data-user="lin"]')
    row.wait_for()

    # change the role, disable and enable, edit the grants
    row.get_by_label("Role of lin").select_option("operator")
    _until(lambda: user_named(server, "lin")["role"] == "operator")
    row.get_by_role("button", name="Disable lin").click()
    _until(lambda: user_named(server, "lin")["disabled"] is True)
    assert httpx.post(f"{server.url}/api/v1/auth/login", json={"username": "lin", "password": once.inner_text()},
                      timeout=30).status_code in (401, 403)
    row.get_by_text("disabled").wait_for()
    row.get_by_role("button", name="Enable lin").click()
    _until(lambda: user_named(server, "lin")["disabled"] is False)
    row.get_by_text("active").wait_for()
    row.get_by_role("button", name="Edit grants of lin").click()
    row.get_by_label("Grants of lin (PIPELINE=ROLE, comma separated)").fill("etl=admin")
    row.get_by_role("button", name="Save").click()
    _until(lambda: [(g["target"], g["role"]) for g in user_named(server, "lin")["grants"]] == [("etl", "admin")])
    row.get_by_text("etl=admin").wait_for()
    page.evaluate("window.scrollTo(0, 0)")
    screenshot(page, "users")

    # an invitation link with a role and an expiry: it works once; another is revoked
    invite = page.get_by_role("form", name="Invite someone")
    invite.get_by_label("Invitation role").select_option("operator")
    invite.get_by_label("Expires after").select_option("24")
    invite.get_by_role("button", name="Create invitation link").click()
    link = page.get_by_test_id("invitation-link")
    link.wait_for()
    (made,) = api(server, "GET", "/invitations").json()
    assert made["role"] == "operator"
    invitee = browser.new_context(viewport={"width": 1280, "height": 720})  # someone else opens the link
    try:
        tab = invitee.new_page()
        tab.goto(link.inner_text())
        joining = tab.get_by_role("form", name="Accept the invitation")
        joining.wait_for()
        for theme in ("light", "dark"):
            set_theme(tab, theme)
            assert axe_violations(tab) == [], theme
        screenshot(tab, "invitation")
        joining.get_by_label("Username").fill("ivy")
        joining.get_by_label("Password (12 characters or more)").fill("ivy-password-12345")
        joining.get_by_role("button", name="Join").click()
        tab.get_by_text("ivy (operator)").wait_for()
        assert tab.url.endswith("/")
    finally:
        invitee.close()
    assert user_named(server, "ivy")["role"] == "operator"
    used = httpx.post(f"{server.url}/api/v1/auth/invitations/accept", timeout=30,
                      json={"token": link.inner_text().split("#", 1)[1], "username": "ivy2", "password": "ivy-password-12345"})
    assert used.status_code in (403, 409), used.text
    invite.get_by_role("button", name="Create invitation link").click()
    page.get_by_role("table", name="Invitations").locator("tbody tr").nth(1).wait_for()
    open_one = [i for i in api(server, "GET", "/invitations").json() if not i["used_at"]]
    assert len(open_one) == 1
    page.get_by_role("button", name=f"Revoke invitation {open_one[0]['id']}").click()
    _until(lambda: not [i for i in api(server, "GET", "/invitations").json() if not i["used_at"]])

    # delete a user (after the confirmation)
    page.reload()  # ivy joined outside this page
    page.once("dialog", lambda dialog: dialog.accept())
    page.get_by_role("table", name="Users").locator('tr[data-user="ivy"]').get_by_role("button", name="Delete ivy").click()
    page.get_by_role("table", name="Users").locator('tr[data-user="ivy"]').wait_for(state="detached")
    assert "ivy" not in [u["username"] for u in api(server, "GET", "/users").json()]

    # tokens: an admin sees every user's tokens and revokes grace's; it stops working at once
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Tokens").click()
    table = page.get_by_role("table", name="Tokens")
    table.locator('tr[data-token="grace test token"]').wait_for()
    page.once("dialog", lambda dialog: dialog.accept())
    table.get_by_role("button", name="Revoke token grace test token").click()
    table.locator('tr[data-token="grace test token"]').wait_for(state="detached")
    assert bearer(server, grace_token, "/auth/me") == 401

    # and makes one of its own: the secret is shown once, limited to one pipeline
    form = page.get_by_role("form", name="New token")
    form.get_by_label("Name", exact=True).fill("ci deploys")
    form.get_by_label("Role").select_option("operator")
    form.get_by_label("Pipelines (optional)").fill("etl")
    form.get_by_role("button", name="Create token").click()
    secret = page.get_by_test_id("token-secret")
    secret.wait_for()
    value = secret.inner_text()
    assert bearer(server, value, "/pipelines/etl") == 200
    assert bearer(server, value, "/pipelines/flaky") in (403, 404)  # out of its scope
    table.locator('tr[data-token="ci deploys"]').wait_for()
    page.evaluate("window.scrollTo(0, 0)")
    screenshot(page, "tokens")
    page.reload()
    table.locator('tr[data-token="ci deploys"]').wait_for()
    assert value not in page.content()  # shown once


def test_the_audit_page_filters_and_pages(page, server):
    for i in range(55):
        assert api(server, "PUT", f"/secrets/AUDIT_{i}", json={"value": "x"}).status_code == 204
    page.goto("/audit")
    table = page.get_by_role("table", name="Audit log")
    table.locator("tbody tr").nth(49).wait_for()
    page.get_by_label("Action").fill("put_secret")
    page.get_by_role("button", name="Apply").click()
    page.wait_for_url(re.compile(r"action=put_secret"))
    table.get_by_text("/api/v1/secrets/AUDIT_54").wait_for()
    rows = table.locator("tbody tr")
    assert rows.count() == 50
    assert set(table.locator("tbody tr td:nth-child(3)").all_inner_texts()) == {"put_secret"}
    page.get_by_role("button", name="Older").click()
    table.get_by_text("PUT /api/v1/secrets/AUDIT_0", exact=True).wait_for()
    assert rows.count() == 5
    assert page.get_by_role("button", name="Older").is_disabled()
    page.get_by_role("button", name="Newer").click()
    table.get_by_text("/api/v1/secrets/AUDIT_54").wait_for()
    # a time range that ends before any entry: nothing
    page.get_by_label("Until").fill("2001-01-01T00:00")
    page.get_by_role("button", name="Apply").click()
    table.get_by_text("No entries match.").wait_for()
    page.get_by_role("button", name="Clear").click()
    page.get_by_label("Actor").fill("user:ada")
    page.get_by_role("button", name="Apply").click()
    page.wait_for_url(re.compile(r"actor=user%3Aada$"))
    _until(lambda: set(table.locator("tbody tr td:nth-child(2)").all_inner_texts()) == {"user:ada"})
    screenshot(page, "audit")


@pytest.fixture
def logged_in(browser: Any, server: Any) -> Iterator[Any]:
    """Log in as a new user with ``role`` and ``grants`` through the login page; the tab."""
    contexts: list[Any] = []

    def login(username: str, role: str, grants: list[dict[str, str]] | None = None) -> Any:
        password = f"{username}-password-123"
        server.login_as(username, role, grants=grants, password=password)
        context = browser.new_context(viewport={"width": 1280, "height": 720}, base_url=server.url)
        context.set_default_timeout(15_000)
        contexts.append(context)
        tab = context.new_page()
        tab.goto("/")
        tab.get_by_label("Username").fill(username)
        tab.get_by_label("Password").fill(password)
        tab.get_by_role("button", name="Log in").click()
        tab.get_by_text(f"{username} ({role})").wait_for()
        return tab

    yield login
    for context in contexts:
        context.close()


RUN_BUTTONS = ["Run now", "Cancel run", "Retry from failed stage", "Re-run with same inputs"]


def run_buttons(tab: Any) -> dict[str, int]:
    return {name: tab.get_by_role("button", name=name).count() for name in RUN_BUTTONS}


@BOTH_DATABASES
def test_a_viewer_sees_no_run_controls_and_a_direct_post_is_refused(logged_in, server):
    failed = run_and_wait(server, "flaky")
    running = api(server, "POST", "/runs", json={"pipeline": "slow"}).json()
    tab = logged_in("vic", "viewer")
    nav = tab.get_by_role("navigation", name="Main")
    assert nav.get_by_role("link", name="Tokens").count() == 1
    assert nav.get_by_role("link", name="Users").count() == 0 and nav.get_by_role("link", name="Audit").count() == 0

    tab.goto("/pipelines/etl")
    tab.get_by_test_id("no-run-rights").wait_for()
    assert run_buttons(tab) == dict.fromkeys(RUN_BUTTONS, 0)
    assert tab.get_by_role("form", name="Run etl").count() == 0
    tab.goto(f"/runs/{running['id']}")
    tab.locator('[data-stage="wait"][data-state="running"]').wait_for(timeout=30_000)
    assert run_buttons(tab) == dict.fromkeys(RUN_BUTTONS, 0)
    screenshot(tab, "run-detail-as-viewer")
    tab.goto(f"/runs/{failed['id']}")
    tab.get_by_test_id("failure").wait_for()
    assert run_buttons(tab) == dict.fromkeys(RUN_BUTTONS, 0)
    tab.goto("/runs")
    tab.get_by_role("table", name="Runs").get_by_text(running["id"]).wait_for()
    assert tab.get_by_role("checkbox").count() == 0
    assert tab.get_by_role("button", name=re.compile("Cancel selected")).count() == 0
    tab.goto("/pipelines")
    tab.get_by_role("table", name="Pipelines").get_by_text("Nightly import").wait_for()
    assert tab.get_by_role("checkbox").count() == 0  # no schedule switch
    tab.goto("/secrets")
    tab.get_by_role("heading", name="Stored secrets").wait_for()
    assert tab.get_by_role("button", name="Save secret").count() == 0

    # whatever the page shows, the server refuses: a POST with the session's own CSRF token
    status = tab.evaluate("""async () => {
        const csrf = (await (await fetch('/api/v1/auth/me')).json()).csrf_token;
        return (await fetch('/api/v1/runs', {method: 'POST',
            headers: {'content-type': 'application/json', 'x-csrf-token': csrf},
            body: JSON.stringify({pipeline: 'etl'})})).status; }""")
    assert status == 403
    cancel = tab.evaluate("""async (id) => {
        const csrf = (await (await fetch('/api/v1/auth/me')).json()).csrf_token;
        return (await fetch(`/api/v1/runs/${id}/cancel`, {method: 'POST', headers: {'x-csrf-token': csrf}})).status; }""",
                          running["id"])
    assert cancel == 403
    assert api(server, "GET", f"/runs/{running['id']}").json()["state"] == "running"


def test_an_operator_by_grant_sees_run_controls_only_where_granted(logged_in, server):
    finished = run_and_wait(server, "flaky")
    tab = logged_in("opal", "viewer", grants=[{"target": "tag:sales", "role": "operator"}])
    tab.goto("/pipelines/etl")  # tagged sales
    tab.get_by_role("form", name="Run etl").get_by_role("button", name="Run now").wait_for()
    tab.goto("/pipelines/flaky")  # no such tag
    tab.get_by_test_id("no-run-rights").wait_for()
    assert tab.get_by_role("button", name="Run now").count() == 0
    tab.goto(f"/runs/{finished['id']}")
    tab.get_by_test_id("failure").wait_for()
    assert run_buttons(tab) == dict.fromkeys(RUN_BUTTONS, 0)
    tab.goto("/pipelines/etl")
    form = tab.get_by_role("form", name="Run etl")
    form.get_by_label("rows").fill("1")
    form.get_by_role("button", name="Run now").click()
    tab.wait_for_url(re.compile(r"/runs/[0-9a-f]+$"))
    tab.get_by_role("button", name=re.compile("Cancel run|Re-run with same inputs")).first.wait_for()
