"""A browser that logged in finds the opened page's first data inside index.html
(``kubeline.ui.first``): the page renders from it without asking the API again; an anonymous
request gets none, and a hostile value in the data cannot break out of its element."""

from __future__ import annotations

import json
import re
import time
from typing import Any

import httpx
import pytest
from tests.browser.conftest import BOTH_DATABASES

pytestmark = pytest.mark.slow

TIMINGS = """() => Object.fromEntries(performance.getEntriesByType('resource')
  .map((e) => [new URL(e.name).pathname + new URL(e.name).search, {start: e.startTime, end: e.responseEnd}]))"""

# The app's module script has run by DOMContentLoaded.
RAN = "performance.getEntriesByType('navigation')[0].domContentLoadedEventStart"
HOSTILE = "</script><script>window.pwned = 1</script><!-- <img src=x onerror='window.pwned = 2'>"
ELEMENT = re.compile(r'<script type="application/json" id="kubeline-first">(.*?)</script>', re.S)


def api_calls(page: Any) -> list[str]:
    """The API calls of the page's first 4 seconds (the dashboard's own refreshes come after 5 s
    at the soonest)."""
    calls: list[str] = []
    opened = time.monotonic()

    def seen(request: Any) -> None:
        if "/api/" in request.url and time.monotonic() - opened < 4:
            calls.append(request.url.split("/", 3)[3])

    page.on("request", seen)
    return calls


def session_cookie(server: Any, username: str, password: str) -> httpx.Cookies:
    with httpx.Client(base_url=server.url) as browser:
        browser.post("/api/v1/auth/login", json={"username": username, "password": password}).raise_for_status()
        return browser.cookies


def inlined(html: str) -> dict[str, Any] | None:
    found = ELEMENT.findall(html)
    assert len(found) <= 1, found
    return json.loads(found[0]) if found else None


@BOTH_DATABASES
def test_the_dashboard_renders_from_the_data_in_its_page_without_asking_again(page, server):
    httpx.post(f"{server.url}/api/v1/runs", json={"pipeline": "flaky"}, headers=server.headers, timeout=30)
    calls = api_calls(page)
    page.goto("/")
    page.get_by_test_id("tiles").wait_for()
    page.get_by_text("No enabled schedules.").or_(page.locator("li", has_text="etl")).first.wait_for()
    page.wait_for_timeout(500)
    for first in ("api/v1/auth/me", "api/v1/stats?days=14&recent=0", "api/v1/runs?state=running&limit=10",
                  "api/v1/schedules?count=1"):
        assert first not in calls, (first, calls)
    assert page.get_by_test_id("tiles").inner_text().split()[0] == "1"  # runs in 14 days
    assert page.locator("#kubeline-first").count() == 0  # read once, then gone from the document


def test_the_run_page_renders_from_its_data_and_its_code_loads_before_the_app_runs(page, server):
    run_id = httpx.post(f"{server.url}/api/v1/runs", json={"pipeline": "flaky"}, headers=server.headers,
                        timeout=30).json()["id"]
    calls = api_calls(page)
    page.goto(f"/runs/{run_id}")
    page.locator("[data-stage=second]").wait_for()
    timings = page.evaluate(TIMINGS)
    ran = page.evaluate(RAN)
    chunk = next(t for path, t in timings.items() if path.startswith("/assets/RunDetail-"))
    assert f"api/v1/runs/{run_id}" not in calls and "api/v1/auth/me" not in calls, calls
    # asked for while the app's module ran, not once the app rendered the route
    assert chunk["start"] < ran, (chunk, ran)


def test_only_a_logged_in_browser_gets_data_in_its_page(server):
    server.login_as("vic", "viewer", password="vic-password-1234")
    run_id = httpx.post(f"{server.url}/api/v1/runs", json={"pipeline": "flaky"}, headers=server.headers,
                        timeout=30).json()["id"]
    with httpx.Client(base_url=server.url, timeout=30) as anonymous:
        for path in ("/", f"/runs/{run_id}"):
            page = anonymous.get(path)
            assert page.status_code == 200 and inlined(page.text) is None, path
        # an API token is not a browser login: a page request with one gets no data either
        assert inlined(anonymous.get("/", headers=server.headers).text) is None
    with httpx.Client(base_url=server.url, timeout=30, cookies={"kubeline_session": "not-a-session"}) as stale:
        page = stale.get("/")
        assert inlined(page.text) is None and page.headers["cache-control"] == "no-store"
    cookies = session_cookie(server, "vic", "vic-password-1234")
    with httpx.Client(base_url=server.url, timeout=30, cookies=cookies) as viewer:
        page = viewer.get("/")
        assert page.headers["cache-control"] == "no-store"
        data = inlined(page.text)
        assert data is not None and data["/api/v1/auth/me"]["name"] == "vic"
        # the same answers the API gives that session (the run may have moved on meanwhile)
        assert data["/api/v1/stats?days=14&recent=0"]["total"] == viewer.get("/api/v1/stats?days=14&recent=0").json()["total"] == 1
        assert set(data) == {"/api/v1/auth/me", "/api/v1/stats?days=14&recent=0", "/api/v1/runs?state=running&limit=10",
                             "/api/v1/schedules?count=1"}
        run_page = inlined(viewer.get(f"/runs/{run_id}").text)
        assert run_page is not None and set(run_page) == {"/api/v1/auth/me", f"/api/v1/runs/{run_id}"}
        assert run_page[f"/api/v1/runs/{run_id}"]["pipeline"] == "flaky"


def test_a_hostile_value_stays_data_and_the_page_shows_it_as_text(page, server):
    run_id = httpx.post(f"{server.url}/api/v1/runs", json={"pipeline": "etl", "inputs": {"day": HOSTILE, "rows": 1}},
                        headers=server.headers, timeout=30).json()["id"]
    cookies = session_cookie(server, "ada", "browser-test-password")  # the page fixture's user
    html = httpx.get(f"{server.url}/runs/{run_id}", cookies=cookies, timeout=30).text
    assert inlined(html)[f"/api/v1/runs/{run_id}"]["inputs"]["day"] == HOSTILE  # type: ignore[index]
    assert html.lower().count("<script") == html.lower().count("</script") == 3  # the page's own two + the data
    assert "<!--" not in html
    calls = api_calls(page)
    page.goto(f"/runs/{run_id}")
    page.locator("[data-stage=fetch]").wait_for()
    page.get_by_text(HOSTILE).first.wait_for()  # shown as the input's text
    assert page.evaluate("window.pwned") is None
    assert f"api/v1/runs/{run_id}" not in calls, calls


def test_an_anonymous_page_logs_in_and_then_asks_for_its_data(browser, server):
    server.login_as("lin", "viewer", password="lin-password-1234")
    httpx.post(f"{server.url}/api/v1/runs", json={"pipeline": "flaky"}, headers=server.headers, timeout=30)
    context = browser.new_context(viewport={"width": 1280, "height": 720}, base_url=server.url)
    try:
        tab = context.new_page()
        tab.goto("/")
        tab.get_by_role("heading", name="Log in to Kubeline").wait_for()
        tab.get_by_label("Username").fill("lin")
        tab.get_by_label("Password").fill("lin-password-1234")
        tab.get_by_role("button", name="Log in").click()
        tab.get_by_test_id("tiles").wait_for()
        assert tab.get_by_test_id("tiles").inner_text().split()[0] == "1"
        assert not tab.get_by_role("alert").count()
    finally:
        context.close()
