"""Password login against a real server: first admin and forced change, throttling, sessions
(cookie flags, CSRF, fixation, logout, idle/absolute expiry), security headers. SQLite and PostgreSQL."""

from __future__ import annotations

import datetime as dt
import time

import httpx
import pytest

from kubeline import settings as settings_
from kubeline import testing

LOGIN = "/api/v1/auth/login"


def _login(http: httpx.Client, username: str, password: str) -> httpx.Response:
    return http.post(LOGIN, json={"username": username, "password": password})


@pytest.fixture
def first_start(auth_settings: settings_.Settings, capfd: pytest.CaptureFixture[str]):  # type: ignore[no-untyped-def]
    with testing.ServerThread(auth_settings, role="api") as server:
        printed = capfd.readouterr().err
        yield server, printed


def test_first_admin_one_time_password_must_be_changed(first_start, auth_settings) -> None:
    server, printed = first_start
    assert "one-time password" in printed
    password = printed.split("one-time password")[1].split()[0]
    with httpx.Client(base_url=server.url) as browser:
        assert _login(browser, "admin", "not it at all").status_code == 401
        me = _login(browser, "admin", password)
        assert me.status_code == 200 and me.json()["must_change_password"] is True
        csrf = {"X-CSRF-Token": me.json()["csrf_token"]}
        blocked = browser.get("/api/v1/runs")
        assert blocked.status_code == 403 and "change your password" in blocked.json()["detail"]
        weak = browser.post("/api/v1/auth/password", json={"current": password, "new": "short"}, headers=csrf)
        assert weak.status_code == 422 and "at least 12" in weak.json()["detail"]
        changed = browser.post("/api/v1/auth/password", json={"current": password, "new": "a much better secret"},
                               headers=csrf)
        assert changed.status_code == 204, changed.text
        assert browser.get("/api/v1/runs").status_code == 200
    with httpx.Client(base_url=server.url) as again:
        assert _login(again, "admin", password).status_code == 401
        assert _login(again, "admin", "a much better secret").json()["must_change_password"] is False
    # a second start prints nothing: the admin exists
    with testing.ServerThread(auth_settings, role="api"):
        pass


def test_admin_password_from_the_environment(auth_settings, capfd) -> None:
    settings = auth_settings.model_copy(update={"admin_password": settings_.pydantic.SecretStr("given by env 123")})
    with testing.ServerThread(settings, role="api") as server, httpx.Client(base_url=server.url) as browser:
        assert "one-time password" not in capfd.readouterr().err
        me = _login(browser, "admin", "given by env 123")
        assert me.status_code == 200 and me.json()["must_change_password"] is True


def test_wrong_passwords_are_throttled(api_server) -> None:
    api_server.login_as("tess", "viewer", password="correct horse battery")
    with httpx.Client(base_url=api_server.url) as browser:
        for _ in range(3):  # login_lock_after=3 in these settings
            assert _login(browser, "tess", "wrong password!").status_code == 401
        locked = _login(browser, "tess", "correct horse battery")
        assert locked.status_code == 429 and int(locked.headers["Retry-After"]) >= 1
        assert "too many failed logins" in locked.json()["detail"]
        assert _login(browser, "nobody", "wrong password!").status_code == 401  # same answer for unknown users
        time.sleep(2.1)
        assert _login(browser, "tess", "correct horse battery").status_code == 200
    with api_server.http() as admin:
        rows = admin.get("/api/v1/audit", params={"action": "login"}).json()["items"]
        failed = [r for r in rows if r["outcome"] == 401]
        assert len(failed) >= 4 and failed[0]["detail"]["username"] in ("tess", "nobody")
        assert not any("wrong password" in str(r) for r in rows)


def test_session_cookie_csrf_fixation_and_logout(api_server) -> None:
    api_server.login_as("cora", "operator", password="cora's long password")
    with httpx.Client(base_url=api_server.url) as browser:
        browser.cookies.set("kubeline_session", "planted-by-an-attacker", domain="127.0.0.1", path="/")
        assert browser.get("/api/v1/runs").status_code == 401
        answer = _login(browser, "cora", "cora's long password")
        cookie = answer.headers["set-cookie"]
        assert "HttpOnly" in cookie and "SameSite=lax" in cookie and "Path=/" in cookie
        assert "Secure" not in cookie  # plain http to loopback; anything else gets Secure
        session = browser.cookies.get("kubeline_session")
        assert session and session != "planted-by-an-attacker"
        csrf = answer.json()["csrf_token"]
        assert browser.get("/api/v1/runs").status_code == 200
        no_csrf = browser.post("/api/v1/runs", json={"pipeline": "hello"})
        assert no_csrf.status_code == 403 and "X-CSRF-Token" in no_csrf.json()["detail"]
        forged = browser.post("/api/v1/runs", json={"pipeline": "hello"}, headers={"X-CSRF-Token": "guess"})
        assert forged.status_code == 403
        assert browser.post("/api/v1/runs", json={"pipeline": "hello"},
                            headers={"X-CSRF-Token": csrf}).status_code == 201
        assert browser.get("/api/v1/auth/me").json()["csrf_token"] == csrf
        assert browser.post("/api/v1/auth/logout", headers={"X-CSRF-Token": csrf}).status_code == 204
    with httpx.Client(base_url=api_server.url, cookies={"kubeline_session": session}) as replay:
        assert replay.get("/api/v1/runs").status_code == 401  # the session is gone from the store


def test_sessions_end_after_idle_and_absolute_limits(auth_settings) -> None:
    settings = auth_settings.model_copy(update={"session_idle_minutes": 1.5 / 60, "session_max_hours": 3 / 3600})
    with testing.ServerThread(settings, role="api") as server:
        server.login_as("ida", "viewer", password="ida's long password")
        with httpx.Client(base_url=server.url) as browser:
            _login(browser, "ida", "ida's long password").raise_for_status()
            assert browser.get("/api/v1/auth/me").status_code == 200
            time.sleep(1.8)
            idle = browser.get("/api/v1/auth/me")
            assert idle.status_code == 401 and "session has ended" in idle.json()["detail"]
        with httpx.Client(base_url=server.url) as busy:
            _login(busy, "ida", "ida's long password").raise_for_status()
            started = dt.datetime.now(dt.UTC)
            while dt.datetime.now(dt.UTC) - started < dt.timedelta(seconds=3.3):
                status = busy.get("/api/v1/auth/me").status_code
                time.sleep(0.5)
            assert status == 401  # active all along, but past the absolute limit


def test_security_headers_on_every_answer(api_server) -> None:
    for path in ("/healthz", "/api/v1/runs", "/api/v1/nope", "/api/v1/openapi.json"):
        answer = httpx.get(api_server.url + path)
        assert answer.headers["x-content-type-options"] == "nosniff", path
        assert answer.headers["x-frame-options"] == "DENY"
        assert answer.headers["referrer-policy"] == "no-referrer"
        assert "frame-ancestors 'none'" in answer.headers["content-security-policy"]
