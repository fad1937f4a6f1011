"""The web UI in a real Chromium against a real server: runs triggered from the generated form,
live DAG and logs, cancel, retry from the failed stage, write-only secrets, charts with data, and
an axe-core scan of every page in both themes."""

from __future__ import annotations

import contextlib
import re
import time
from typing import Any

import httpx
import pytest
from tests.browser.conftest import BOTH_DATABASES, axe_violations, screenshot, set_theme

pytestmark = pytest.mark.slow


def api(server: Any, method: str, path: str, **kwargs: Any) -> httpx.Response:
    return httpx.request(method, f"{server.url}/api/v1{path}", timeout=30, headers=server.headers, **kwargs)


def test_log_in_with_a_password_and_out(browser, server):
    server.login_as("grace", "viewer", password="grace-password-123")
    context = browser.new_context(viewport={"width": 1280, "height": 720}, base_url=server.url)
    try:
        tab = context.new_page()
        tab.goto("/runs")
        tab.get_by_role("heading", name="Log in to Kubeline").wait_for()
        tab.get_by_label("Username").fill("grace")
        tab.get_by_label("Password").fill("wrong-password-here")
        tab.get_by_role("button", name="Log in").click()
        tab.get_by_text("wrong", exact=False).first.wait_for()
        tab.get_by_label("Password").fill("grace-password-123")
        tab.get_by_role("button", name="Log in").click()
        tab.get_by_text("grace (viewer)").wait_for()
        screenshot(tab, "runs-as-viewer")
        # a viewer's browser session cannot change anything, whatever the page shows
        csrf = tab.evaluate("async () => (await (await fetch('/api/v1/auth/me')).json()).csrf_token")
        status = tab.evaluate("""async (csrf) => (await fetch('/api/v1/runs', {method: 'POST',
            headers: {'content-type': 'application/json', 'x-csrf-token': csrf},
            body: JSON.stringify({pipeline: 'etl'})})).status""", csrf)
        assert status == 403
        no_csrf = tab.evaluate("""async () => (await fetch('/api/v1/auth/logout', {method: 'POST'})).status""")
        assert no_csrf == 403  # a state-changing browser call without the CSRF token is refused
        tab.get_by_role("button", name="Log out").click()
        tab.get_by_role("heading", name="Log in to Kubeline").wait_for()
    finally:
        context.close()


def run_and_wait(server: Any, pipeline: str, inputs: dict[str, Any] | None = None, *, timeout: float = 60) -> dict[str, Any]:
    run = api(server, "POST", "/runs", json={"pipeline": pipeline, "inputs": inputs or {}}).json()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = api(server, "GET", f"/runs/{run['id']}").json()
        if found["state"] in ("succeeded", "failed", "cancelled", "timed_out"):
            return found
        time.sleep(0.2)
    raise AssertionError(f"run {run['id']} did not finish")


@BOTH_DATABASES
def test_trigger_from_the_generated_form_and_watch_dag_and_logs_live(page, server):
    page.goto("/pipelines/etl")
    page.locator(".dag-edge").nth(1).wait_for(state="attached")  # fetch -> clean -> report
    assert page.locator(".dag-edge").count() == 2
    screenshot(page, "pipeline-detail")
    form = page.get_by_role("form", name="Run etl")
    form.get_by_label("day").fill("2025-01-01")
    form.get_by_label("rows").fill("8")
    form.get_by_role("button", name="Run now").click()
    page.wait_for_url(re.compile(r"/runs/[0-9a-f]+$"))
    fetch = page.locator('[data-stage="fetch"]')
    fetch.and_(page.locator('[data-state="running"]')).wait_for()
    counts = set()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and page.locator('[data-stage="report"][data-state="succeeded"]').count() == 0:
        counts.add(page.get_by_test_id("log-count").inner_text())
        time.sleep(0.15)
    assert page.locator('[data-stage="report"][data-state="succeeded"]').count() == 1
    assert len(counts) >= 3, f"the log did not grow live: {counts}"
    page.get_by_text("fetched row 8 for 2025-01-01").wait_for()
    assert page.locator(".a-fg32", has_text="fetched").count() >= 1  # ANSI green kept as colour
    page.locator(".j-key", has_text="nested").wait_for()
    screenshot(page, "run-detail")


@BOTH_DATABASES
def test_cancel_a_running_run(page, server):
    run = api(server, "POST", "/runs", json={"pipeline": "slow"}).json()
    page.goto(f"/runs/{run['id']}")
    page.locator('[data-stage="wait"][data-state="running"]').wait_for(timeout=30_000)
    page.get_by_role("button", name="Cancel run").click()
    page.locator(".title-row .badge", has_text="cancelled").wait_for(timeout=30_000)
    assert api(server, "GET", f"/runs/{run['id']}").json()["state"] == "cancelled"
    assert page.get_by_role("button", name="Cancel run").count() == 0


@BOTH_DATABASES
def test_retry_from_the_failed_stage(page, server, mark):
    failed = run_and_wait(server, "flaky")
    assert failed["state"] == "failed"
    page.goto(f"/runs/{failed['id']}")
    reason = page.get_by_test_id("failure")
    reason.wait_for()
    assert "second" in reason.inner_text()
    page.locator('[data-stage="second"][data-state="failed"]').wait_for()
    page.get_by_role("button", name="Jump to error").click()
    mark.write_text("x")
    page.get_by_role("button", name="Retry from failed stage").click()
    page.wait_for_url(lambda url: failed["id"] not in url)
    page.locator('[data-stage="second"][data-state="succeeded"]').wait_for(timeout=30_000)
    retried = api(server, "GET", "/runs/" + page.url.rsplit("/", 1)[1]).json()
    assert retried["parent_run_id"] == failed["id"]
    assert [a["stage_id"] for a in retried["attempts"]] == ["second"]  # the first stage was kept, not run again


@BOTH_DATABASES
def test_a_secret_value_is_never_shown_again(page, server):
    value = "hunter2-very-secret-value"
    page.goto("/secrets")
    page.get_by_label("Name", exact=True).fill("DB_PASSWORD")
    page.get_by_label("Value", exact=True).fill(value)
    page.get_by_role("button", name="Save secret").click()
    page.get_by_role("list", name="Secret names").get_by_text("DB_PASSWORD").wait_for()
    assert page.get_by_label("Value", exact=True).input_value() == ""
    assert value not in page.content()
    page.reload()
    page.get_by_role("list", name="Secret names").get_by_text("DB_PASSWORD").wait_for()
    assert value not in page.content()
    assert value not in api(server, "GET", "/secrets").text


def test_executed_notebook_inline_with_cell_status_and_resources(page, server):
    failed = run_and_wait(server, "report", timeout=300)
    assert failed["state"] == "failed", api(server, "GET", f"/runs/{failed['id']}/logs").text
    page.goto(f"/runs/{failed['id']}")
    book = page.get_by_role("region", name="Notebook")
    book.locator('[data-cell="0"]').get_by_text("rows read: 3").wait_for()
    assert "succeeded" in book.locator('[data-cell="1"]').inner_text()
    assert "42" in book.locator('[data-cell="1"]').inner_text()  # the cell's result, as executed
    third = book.locator('[data-cell="2"]').inner_text()
    assert "failed" in third and "bad row 2" in third
    assert "skipped" in book.locator('[data-cell="3"]').inner_text()
    charts = page.get_by_role("region", name="CPU and memory")
    charts.get_by_role("list", name="Memory per attempt").get_by_text("MiB").wait_for()
    assert "main #1" in charts.get_by_role("list", name="CPU per attempt").inner_text()
    book.scroll_into_view_if_needed()
    screenshot(page, "run-detail-notebook")
    for theme in ("light", "dark"):
        set_theme(page, theme)
        assert axe_violations(page) == [], theme


def test_dashboard_charts_and_heatmap_render_with_data(page, server):
    run_and_wait(server, "etl", {"rows": 1})
    run_and_wait(server, "flaky")
    page.goto("/")
    page.locator('[data-chart="heatmap"]').wait_for()
    assert page.locator('[data-chart="runs-over-time"] rect.bar-succeeded').count() >= 1
    assert page.locator('[data-chart="runs-over-time"] rect.bar-failed').count() >= 1
    filled = page.eval_on_selector_all('[data-chart="heatmap"] rect.heat',
                                       "els => els.filter(e => parseFloat(e.style.fillOpacity) > 0.1).length")
    assert filled >= 1
    assert "50.0%" in page.get_by_test_id("tiles").inner_text()  # one of two finished runs failed
    screenshot(page, "dashboard")


def test_runs_list_filters_and_bulk_cancel(page, server):
    done = run_and_wait(server, "etl", {"rows": 1})
    slow = [api(server, "POST", "/runs", json={"pipeline": "slow"}).json() for _ in range(2)]
    page.goto("/runs")
    table = page.get_by_role("table", name="Runs")
    table.get_by_text(done["id"]).wait_for()
    page.get_by_label("State").select_option("succeeded")
    page.wait_for_url(re.compile(r"state=succeeded"))
    table.get_by_text(slow[0]["id"]).wait_for(state="detached")
    table.get_by_text(done["id"]).wait_for()
    page.get_by_label("State").select_option("")
    for run in slow:
        page.get_by_label(f"Select run {run['id']}").check()
    page.get_by_role("button", name="Cancel selected (2)").click()
    page.get_by_role("status").filter(has_text="2 cancelled").wait_for()
    for run in slow:
        assert api(server, "GET", f"/runs/{run['id']}").json()["state"] in ("cancelled",)
    screenshot(page, "runs")


PAGES = ["/", "/pipelines", "/pipelines/etl", "/runs", "/run", "/secrets", "/system", "/users", "/tokens", "/audit"]


def test_every_page_passes_the_accessibility_scan(page, server, theme):
    finished = run_and_wait(server, "flaky")
    run_and_wait(server, "etl", {"rows": 2})
    api(server, "PUT", "/secrets/API_TOKEN", json={"value": "x"})
    server.login_as("grace", "operator", grants=[{"target": "etl", "role": "admin"}])  # a user with a grant and a token
    api(server, "POST", "/invitations", json={"role": "operator", "email": "new@example.com"})
    problems = {}
    for path in PAGES:
        target = f"/runs/{finished['id']}" if path == "/run" else path
        page.goto(target)
        set_theme(page, theme)
        page.reload()
        page.locator("main h1").first.wait_for()
        with contextlib.suppress(Exception):  # live pages keep an SSE stream open: never "idle"
            page.wait_for_load_state("networkidle", timeout=3000)
        page.locator("main .muted", has_text="Loading").wait_for(state="detached")
        if path == "/system":  # the queue counts and the scheduler's lag (no schedule fired on this server)
            page.locator("dd", has_text="no schedule has fired yet").wait_for()
        found = axe_violations(page)
        if found:
            problems[target] = found
        name = {"/": "dashboard", "/run": "run-detail-failed", "/pipelines/etl": "pipeline-detail"}.get(path, path.strip("/"))
        screenshot(page, f"{name}-{theme}")
    assert not problems, "\n".join(f"{path}: {v['impact']} {v['id']}: {v['help']} at {v['nodes']}"
                                    for path, found in problems.items() for v in found)
