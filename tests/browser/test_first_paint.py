"""The first calls of a page start from index.html, before the script bundle has run, and are
not made twice; an early answer that failed (401 before login) is never used."""

from __future__ import annotations

import time
from typing import Any

import httpx
import pytest
from tests.browser.conftest import BOTH_DATABASES

pytestmark = pytest.mark.slow

TIMINGS = """() => Object.fromEntries(performance.getEntriesByType('resource')
  .map((e) => [new URL(e.name).pathname + new URL(e.name).search, {start: e.startTime, end: e.responseEnd}]))"""

# The app's module script has run by DOMContentLoaded; without the early calls the page asks for
# its data only after React rendered it, later.
RAN = "performance.getEntriesByType('navigation')[0].domContentLoadedEventStart"


def api_calls(page: Any) -> list[str]:
    """The API calls of the page's first 4 seconds (a repeat from not taking an early answer comes
    within one; the dashboard's own refreshes come after 5 s at the soonest)."""
    calls: list[str] = []
    first: list[float] = []

    def seen(request: Any) -> None:
        if "/api/" in request.url:
            first.append(first[0] if first else time.monotonic())
            if time.monotonic() - first[0] < 4:
                calls.append(request.url.split("/", 3)[3])

    page.on("request", seen)
    return calls


@BOTH_DATABASES
def test_dashboard_calls_start_before_the_bundle_runs_once_each(page, server):
    httpx.post(f"{server.url}/api/v1/runs", json={"pipeline": "flaky"}, headers=server.headers, timeout=30)
    calls = api_calls(page)
    page.goto("/")
    page.get_by_test_id("tiles").wait_for()
    page.get_by_text("No enabled schedules.").or_(page.locator("li", has_text="etl")).first.wait_for()
    timings = page.evaluate(TIMINGS)
    ran = page.evaluate(RAN)
    for early in ("/api/v1/auth/me", "/api/v1/stats?days=14", "/api/v1/runs?state=running&limit=10",
                  "/api/v1/schedules?count=1"):
        assert timings[early]["start"] < ran, f"{early} was asked for after the bundle ran"
        assert calls.count(early.lstrip("/")) == 1, (early, calls)
    assert page.get_by_test_id("tiles").inner_text().split()[0] == "1"  # runs in 14 days


def test_run_page_data_starts_early_and_its_code_before_the_app_renders(page, server):
    run_id = httpx.post(f"{server.url}/api/v1/runs", json={"pipeline": "flaky"}, headers=server.headers,
                        timeout=30).json()["id"]
    calls = api_calls(page)
    page.goto(f"/runs/{run_id}")
    page.locator("[data-stage=second]").wait_for()
    timings = page.evaluate(TIMINGS)
    ran = page.evaluate(RAN)
    chunk = next(t for path, t in timings.items() if path.startswith("/assets/RunDetail-"))
    assert timings[f"/api/v1/runs/{run_id}"]["start"] < ran
    assert calls.count(f"api/v1/runs/{run_id}") == 1, calls
    # asked for while the app's module ran, not once the app rendered the route
    assert chunk["start"] < ran, (chunk, ran)


def test_an_early_401_is_not_used_after_logging_in(browser, server):
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
