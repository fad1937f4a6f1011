"""OAuth/OIDC login through a real provider process on 127.0.0.1: the whole authorization-code
flow with PKCE over HTTP (browser -> Kubeline -> provider -> Kubeline), role mapping, join
requests, invitations, GitHub-style OAuth, and every ID token or state Kubeline must refuse.
SQLite and PostgreSQL."""

from __future__ import annotations

import time
import urllib.parse
from collections.abc import Iterator

import httpx
import oidc_provider  # the test provider beside this file
import pytest

from kubeline import testing

pytestmark = pytest.mark.slow


@pytest.fixture
def provider() -> Iterator[oidc_provider.Provider]:
    with oidc_provider.running() as running:
        yield running


@pytest.fixture
def oidc_server(auth_settings, provider) -> Iterator[testing.ServerThread]:  # type: ignore[no-untyped-def]
    common = {"client_id": oidc_provider.CLIENT_ID, "client_secret": oidc_provider.CLIENT_SECRET}
    discovery = f"{provider.url}/.well-known/openid-configuration"
    providers = [
        {"name": "corp", "kind": "oidc", "discovery_url": discovery, **common,
         "roles": {"domains": {"example.com": "viewer"},
                   "claims": [{"claim": "groups", "value": "admins", "role": "admin"}]}},
        {"name": "strict", "kind": "oidc", "discovery_url": discovery, **common},
        {"name": "gh", "kind": "github", "authorize_url": f"{provider.url}/authorize",
         "token_url": f"{provider.url}/token", "api_url": provider.url, **common,
         "roles": {"claims": [{"claim": "orgs", "value": "staff", "role": "operator"}]}},
    ]
    with testing.ServerThread(auth_settings.model_copy(update={"oidc_providers": providers}), role="api") as server:
        yield server


def _start(browser: httpx.Client, name: str, **params: str) -> str:
    """Kubeline's login redirect: the provider's authorization URL."""
    answer = browser.get(f"/api/v1/auth/oidc/{name}/login", params=params)
    assert answer.status_code == 302, answer.text
    return answer.headers["location"]


def _provider_redirect(authorize_url: str) -> str:
    """The provider logs the user in and redirects back: Kubeline's callback URL with code and state."""
    answer = httpx.get(authorize_url)
    assert answer.status_code == 302, answer.text
    return answer.headers["location"]


def _login(browser: httpx.Client, name: str, **params: str) -> httpx.Response:
    return browser.get(_provider_redirect(_start(browser, name, **params)))


def test_authorization_code_flow_with_pkce_and_role_mapping(oidc_server, provider) -> None:
    with httpx.Client(base_url=oidc_server.url) as browser:
        authorize = _start(browser, "corp")
        query = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(authorize).query))
        assert authorize.startswith(f"{provider.url}/authorize?")
        assert query["code_challenge_method"] == "S256" and len(query["code_challenge"]) == 43
        assert query["redirect_uri"] == f"{oidc_server.url}/api/v1/auth/oidc/corp/callback"
        assert query["state"] and query["nonce"] and "openid" in query["scope"]
        assert browser.cookies.get("kubeline_oauth") == query["state"]
        done = browser.get(_provider_redirect(authorize))
        assert done.status_code == 302 and done.headers["location"] == "/", done.text
        assert "HttpOnly" in done.headers.get("set-cookie", "")
        me = browser.get("/api/v1/auth/me").json()
        assert (me["name"], me["role"], me["user"]["provider"]) == ("ann", "viewer", "corp")
        assert me["csrf_token"]
        assert browser.post("/api/v1/runs", json={"pipeline": "hello"},
                            headers={"X-CSRF-Token": me["csrf_token"]}).status_code == 403  # a viewer
    provider.user = {**provider.user, "groups": ["staff", "admins"]}
    with httpx.Client(base_url=oidc_server.url) as browser:
        assert _login(browser, "corp").status_code == 302
        me = browser.get("/api/v1/auth/me").json()
        assert (me["name"], me["role"]) == ("ann", "admin")  # same user (sub), role from the claim mapping
    with oidc_server.http() as admin:
        logins = admin.get("/api/v1/audit", params={"action": "oidc_callback"}).json()["items"]
        assert [e["outcome"] for e in logins] == [302, 302] and logins[0]["detail"]["subject"] == "u-1"


@pytest.mark.parametrize(("tamper", "why"), [
    ({"aud": "someone-else"}, "aud"),
    ({"iss": "https://evil.example"}, "iss"),
    ({"exp": int(time.time()) - 3600}, "exp"),
    ({"sign_with_other_key": True}, "signature"),
    ({"nonce": "not-the-one-sent"}, "nonce"),
])
def test_bad_id_tokens_are_refused(oidc_server, provider, tamper, why) -> None:
    provider.tamper = tamper
    with httpx.Client(base_url=oidc_server.url) as browser:
        answer = _login(browser, "corp")
        assert answer.status_code == 403, (why, answer.text)
        assert "ID token is not valid" in answer.json()["detail"]
        assert browser.cookies.get("kubeline_session") is None
        assert browser.get("/api/v1/auth/me").status_code == 401


def test_forged_replayed_and_foreign_states_are_refused(oidc_server, provider) -> None:
    with httpx.Client(base_url=oidc_server.url) as browser:
        callback = _provider_redirect(_start(browser, "corp"))
        assert browser.get(callback).status_code == 302
        state = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(callback).query))["state"]
        browser.cookies.set("kubeline_oauth", state, domain="127.0.0.1", path="/api/v1/auth/oidc")
        replay = browser.get(callback)  # the same state, code and cookie again
        assert replay.status_code == 400 and "used already" in replay.json()["detail"]
    with httpx.Client(base_url=oidc_server.url) as browser:
        callback = _provider_redirect(_start(browser, "corp"))
        code = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(callback).query))["code"]
        browser.cookies.set("kubeline_oauth", "forged", domain="127.0.0.1", path="/api/v1/auth/oidc")
        forged = browser.get("/api/v1/auth/oidc/corp/callback", params={"code": code, "state": "forged"})
        assert forged.status_code == 400 and "unknown" in forged.json()["detail"]
    with httpx.Client(base_url=oidc_server.url) as victim, httpx.Client(base_url=oidc_server.url) as attacker:
        callback = _provider_redirect(_start(attacker, "corp"))  # login CSRF: the attacker's state
        foreign = victim.get(callback)
        assert foreign.status_code == 400 and "another browser" in foreign.json()["detail"]
        assert victim.cookies.get("kubeline_session") is None
    with httpx.Client(base_url=oidc_server.url) as browser:
        assert browser.get("/api/v1/auth/oidc/nope/login").status_code == 404


def test_unknown_people_ask_to_join_and_an_admin_decides(oidc_server, provider) -> None:
    provider.user = {"sub": "u-2", "email": "bob@elsewhere.org", "email_verified": True, "preferred_username": "bob"}
    with httpx.Client(base_url=oidc_server.url) as browser:
        asked = _login(browser, "strict")
        assert asked.status_code == 403 and "waits for an admin" in asked.json()["detail"]
        assert browser.cookies.get("kubeline_session") is None
        assert _login(browser, "strict").status_code == 403  # asking again keeps one request
    with oidc_server.http() as admin:
        [request] = admin.get("/api/v1/join-requests").json()
        assert (request["username"], request["email"], request["provider"]) == ("bob", "bob@elsewhere.org", "strict")
        approved = admin.post(f"/api/v1/join-requests/{request['id']}/approve", json={"role": "operator"})
        assert approved.status_code == 200 and approved.json()["role"] == "operator"
        again = admin.post(f"/api/v1/join-requests/{request['id']}/approve", json={"role": "admin"})
        assert again.status_code == 409
    with httpx.Client(base_url=oidc_server.url) as browser:
        assert _login(browser, "strict").status_code == 302
        assert browser.get("/api/v1/auth/me").json()["role"] == "operator"
    provider.user = {"sub": "u-3", "email": "eve@elsewhere.org", "email_verified": True, "preferred_username": "eve"}
    with httpx.Client(base_url=oidc_server.url) as browser:
        assert _login(browser, "strict").status_code == 403
    with oidc_server.http() as admin:
        [eve] = admin.get("/api/v1/join-requests").json()
        assert admin.post(f"/api/v1/join-requests/{eve['id']}/reject").json()["state"] == "rejected"
    with httpx.Client(base_url=oidc_server.url) as browser:
        assert _login(browser, "strict").status_code == 403


def test_an_invitation_lets_a_provider_user_in_once(oidc_server, provider) -> None:
    with oidc_server.http() as admin:
        invitation = admin.post("/api/v1/invitations", json={"role": "admin"}).json()["token"]
    provider.user = {"sub": "u-4", "email": "cat@elsewhere.org", "email_verified": True, "preferred_username": "cat"}
    with httpx.Client(base_url=oidc_server.url) as browser:
        assert _login(browser, "strict", invitation=invitation).status_code == 302
        assert browser.get("/api/v1/auth/me").json()["role"] == "admin"
    provider.user = {"sub": "u-5", "email": "dan@elsewhere.org", "email_verified": True, "preferred_username": "dan"}
    with httpx.Client(base_url=oidc_server.url) as browser:
        used = _login(browser, "strict", invitation=invitation)
        assert used.status_code == 403 and "used already" in used.json()["detail"]


def test_github_oauth_with_organisations(oidc_server, provider) -> None:
    provider.user = {"sub": "ignored", "github_id": 777, "email": "gil@example.com", "email_verified": True,
                     "preferred_username": "gil", "groups": ["staff"]}
    with httpx.Client(base_url=oidc_server.url) as browser:
        assert _login(browser, "gh").status_code == 302
        me = browser.get("/api/v1/auth/me").json()
        assert (me["name"], me["role"], me["user"]["email"]) == ("gil", "operator", "gil@example.com")
