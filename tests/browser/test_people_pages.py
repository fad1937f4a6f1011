"""Tokens and join requests in the browser: a non-admin makes their own API token (shown once,
then listed without its value) and it works against the API; an admin approves one provider
user's join request and rejects another's, and only the approved one can then log in (through
the login page's provider button and a real OpenID Connect provider on 127.0.0.1)."""

from __future__ import annotations

import importlib.util
import pathlib
import sys
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from tests.browser.conftest import ROOT, axe_violations, screenshot, write_pipelines

from kubeline import settings as settings_
from kubeline import testing

pytestmark = pytest.mark.slow


def _oidc_provider_module() -> Any:
    """The integration suite's test provider (tests/integration/auth/oidc_provider.py), reused as is."""
    spec = importlib.util.spec_from_file_location(
        "kubeline_browser_oidc", ROOT / "tests" / "integration" / "auth" / "oidc_provider.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


oidc_provider = _oidc_provider_module()


@pytest.fixture
def provider() -> Iterator[Any]:
    with oidc_provider.running() as running:
        yield running


@pytest.fixture
def server(tmp_path: pathlib.Path, mark: pathlib.Path, database_url: str, provider: Any) -> Iterator[testing.ServerThread]:
    """The browser tests' server with one login provider that maps nobody to a role (join requests)."""
    strict = {"name": "strict", "kind": "oidc", "label": "Corp SSO",
              "discovery_url": f"{provider.url}/.well-known/openid-configuration",
              "client_id": oidc_provider.CLIENT_ID, "client_secret": oidc_provider.CLIENT_SECRET}
    config = settings_.Settings(home=tmp_path / "home", database_url=database_url,
                                pipelines_dir=write_pipelines(tmp_path / "pipelines", mark=mark),
                                oidc_providers=[strict])
    with testing.ServerThread(config) as running:
        yield running


def fresh_tab(browser: Any, server: testing.ServerThread) -> Any:
    context = browser.new_context(viewport={"width": 1280, "height": 720}, base_url=server.url)
    context.set_default_timeout(15_000)
    return context, context.new_page()


def test_an_operator_makes_a_token_shown_once_that_works(browser, server):
    server.login_as("otto", "operator", password="otto-password-1234")
    context, tab = fresh_tab(browser, server)
    try:
        tab.goto("/tokens")
        tab.get_by_label("Username").fill("otto")
        tab.get_by_label("Password").fill("otto-password-1234")
        tab.get_by_role("button", name="Log in").click()
        tab.get_by_role("heading", name="API tokens").wait_for()
        form = tab.get_by_role("form", name="New token")
        assert form.get_by_label("Role").locator("option").all_inner_texts() == ["viewer", "operator"]
        assert not form.get_by_label("Kind").count()  # service tokens are for admins
        form.get_by_label("Name", exact=True).fill("ci deploys")
        form.get_by_label("Role").select_option("operator")
        form.get_by_role("button", name="Create token").click()
        secret = tab.get_by_test_id("token-secret").inner_text().strip()
        assert len(secret) > 20
        row = tab.locator("tr[data-token='ci deploys']")
        row.wait_for()
        assert "operator" in row.inner_text() and secret not in row.inner_text()
        screenshot(tab, "tokens-as-operator")

        headers = {"Authorization": f"Bearer {secret}"}
        me = httpx.get(f"{server.url}/api/v1/auth/me", headers=headers, timeout=30).json()
        assert me["role"] == "operator" and me["kind"] == "token", me
        started = httpx.post(f"{server.url}/api/v1/runs", json={"pipeline": "flaky"}, headers=headers, timeout=30)
        assert started.status_code in (200, 201, 202), started.text
        refused = httpx.put(f"{server.url}/api/v1/secrets/NOPE", json={"value": "x"}, headers=headers, timeout=30)
        assert refused.status_code == 403  # the token acts as an operator, not more

        tab.reload()
        tab.locator("tr[data-token='ci deploys']").wait_for()
        assert not tab.get_by_test_id("token-secret").count()
        assert secret not in tab.content()  # listed without its value, never shown again
        listed = httpx.get(f"{server.url}/api/v1/tokens", headers=headers, timeout=30).json()
        assert "ci deploys" in [t["name"] for t in listed] and secret not in str(listed)
    finally:
        context.close()


def provider_login(browser: Any, server: testing.ServerThread, provider: Any, who: str) -> tuple[Any, Any]:
    """``who`` logs in with the provider from the login page; returns the context and tab."""
    provider.user = {"sub": f"sub-{who}", "email": f"{who}@elsewhere.org", "email_verified": True,
                     "preferred_username": who}
    context, tab = fresh_tab(browser, server)
    tab.goto("/")
    button = tab.get_by_role("link", name="Log in with Corp SSO")
    button.wait_for()
    assert axe_violations(tab) == []
    button.click()
    tab.wait_for_load_state()
    return context, tab


def refused_on_the_login_page(tab: Any, server: testing.ServerThread) -> str:
    """The refusal of a provider login, as the login page shows it: in words, not a problem document."""
    tab.get_by_role("heading", name="Log in to Kubeline").wait_for()
    alert = tab.get_by_role("alert")
    alert.wait_for()
    assert tab.url.rstrip("/") == server.url.rstrip("/")
    body = tab.locator("body").inner_text()
    assert '"detail"' not in body and "{" not in body, body
    assert not tab.evaluate("document.cookie")  # the reason was read once and removed
    text: str = alert.inner_text()
    return text


def test_an_admin_approves_one_join_request_and_rejects_another(browser, server, provider, page):
    for who in ("bob", "eve"):
        context, tab = provider_login(browser, server, provider, who)
        try:
            said = refused_on_the_login_page(tab, server)
            assert said.startswith(f"'{who}' is not a user here yet") and "waits for an admin" in said, said
        finally:
            context.close()

    page.goto("/users")
    requests = page.get_by_role("table", name="Join requests")
    requests.get_by_text("bob@elsewhere.org").wait_for()
    requests.get_by_text("eve@elsewhere.org").wait_for()
    screenshot(page, "users-join-requests")
    page.get_by_label("Role for bob").select_option("operator")
    page.get_by_role("button", name="Approve bob").click()
    requests.get_by_text("bob@elsewhere.org").wait_for(state="detached")
    page.get_by_role("button", name="Reject eve").click()
    requests.get_by_text("No pending requests.").wait_for()
    users = page.get_by_role("table", name="Users")
    users.get_by_role("button", name="Disable bob").wait_for()
    assert not users.get_by_text("eve@elsewhere.org").count()
    decided = {state: [j["username"] for j in httpx.get(f"{server.url}/api/v1/join-requests", params={"state": state},
                                                         headers=server.headers, timeout=30).json()]
               for state in ("approved", "rejected")}
    assert decided == {"approved": ["bob"], "rejected": ["eve"]}

    context, tab = provider_login(browser, server, provider, "bob")
    try:
        tab.get_by_text("bob (operator)").wait_for()
        assert tab.url.rstrip("/") == server.url.rstrip("/")
    finally:
        context.close()
    context, tab = provider_login(browser, server, provider, "eve")
    try:
        assert "eve" in refused_on_the_login_page(tab, server)
        assert "eve (" not in tab.content()
        assert tab.evaluate("async () => (await fetch('/api/v1/auth/me')).status") == 401
    finally:
        context.close()
