"""The log view on a log of tens of thousands of lines (packed batches from the log worker,
windowed rows): every line counted, the end followed, and the stage filter, search and jump to
error working over the whole log."""

from __future__ import annotations

import time

import httpx
import pytest

pytestmark = pytest.mark.slow

LINES = 30_000
CHATTY = f"""stages:
  - {{id: talk, type: shell, command: 'seq 1 {LINES} | sed "s/^/line /"'}}
  - {{id: last, type: shell, dependsOn: [talk], command: 'echo "the end"; echo "error: it broke" >&2'}}
"""


def count_is(page, text: str) -> None:  # type: ignore[no-untyped-def]
    try:
        page.wait_for_function("t => document.querySelector('[data-testid=log-count]').textContent === t", arg=text,
                               timeout=60_000)
    except Exception:
        raise AssertionError(f"log count {page.get_by_test_id('log-count').inner_text()!r}, wanted {text!r}") from None


def test_a_big_log_is_followed_filtered_searched_and_jumped_through(page, server):
    folder = server.settings.pipelines_dir / "chatty"
    folder.mkdir()
    (folder / "pipeline.yaml").write_text(CHATTY)
    headers = server.headers
    httpx.post(f"{server.url}/api/v1/pipelines/reload", headers=headers, timeout=30).raise_for_status()
    run = httpx.post(f"{server.url}/api/v1/runs", json={"pipeline": "chatty"}, headers=headers, timeout=30).json()
    page.goto(f"/runs/{run['id']}")
    log = page.get_by_role("log", name="Log lines")
    deadline = time.monotonic() + 60
    while httpx.get(f"{server.url}/api/v1/runs/{run['id']}", headers=headers, timeout=30).json()["state"] != "succeeded":
        assert time.monotonic() < deadline, "the run did not succeed in 60 s"
        time.sleep(0.5)
    stored = {stage: len(httpx.get(f"{server.url}/api/v1/runs/{run['id']}/logs", params={"stage": stage},
                                   headers=headers, timeout=30).text.splitlines()) for stage in ("talk", "last")}
    assert stored["talk"] >= LINES and stored["last"] >= 2  # (the executor may add lines of its own)
    total = stored["talk"] + stored["last"]
    count_is(page, f"{total:,} lines")  # every line, and the stream ended
    # followed to the end: the last row drawn is the log's last line (lines of the two stages may
    # come in either order on the live stream)
    assert log.locator(".log-line").last.get_attribute("style").startswith(f"transform: translateY({(total - 1) * 18}px)")
    assert log.get_by_text("line 1", exact=True).count() == 0  # windowed: the top is not rendered

    page.get_by_label("Stage", exact=True).select_option("talk")
    count_is(page, f"{stored['talk']:,} lines")
    page.get_by_label("Stage", exact=True).select_option("last")
    count_is(page, f"{stored['last']:,} lines")
    log.get_by_text("the end").wait_for()
    page.get_by_label("Stage", exact=True).select_option("")
    count_is(page, f"{total:,} lines")

    search = page.get_by_label("Search the log")
    search.fill("line 1234")
    page.get_by_text("11 matches").wait_for()  # 1234 and 12340-12349
    search.press("Enter")
    hit = log.locator(".log-line.hit")
    hit.wait_for()
    assert hit.inner_text().endswith("line 1234")
    search.press("Enter")
    page.wait_for_function("() => document.querySelector('.log-line.hit')?.textContent.endsWith('line 12340')")

    search.fill("")
    page.get_by_role("button", name="Jump to error").click()
    page.wait_for_function("() => document.querySelector('.log-line.hit')?.textContent.endsWith('error: it broke')")
    assert "stderr" in (hit.get_attribute("class") or "")
