"""``kubeline.ui.first`` on a bare FastAPI app whose routes check a session cookie the way the
API does: the page carries the answers only for a request with a valid session, only 200 JSON
answers, escaped so that no value ends its element, and the calls forward nothing but the cookie."""

from __future__ import annotations

import asyncio
import json
import re
from typing import Annotated

import fastapi
import httpx

from kubeline.ui import first, serve

HOSTILE = "</script><script>window.pwned = 1</script><!-- & \u2028 </SCRIPT >"
PAGE = '<!doctype html><html><head><script type="module" src="/assets/app-1.js"></script></head>' \
       '<body><div id="root"></div></body></html>'


def session(request: fastapi.Request, kubeline_session: Annotated[str, fastapi.Cookie()] = "") -> str:
    request.app.state.seen.append(dict(request.headers))
    if kubeline_session != "good":
        raise fastapi.HTTPException(401, "log in first")
    return kubeline_session


Session = Annotated[str, fastapi.Depends(session)]


def app_with(static) -> tuple[fastapi.FastAPI, list[dict[str, str]]]:  # type: ignore[no-untyped-def]
    app = fastapi.FastAPI()
    seen: list[dict[str, str]] = []
    app.state.seen = seen

    @app.get("/api/v1/auth/me")
    def me(_: Session) -> dict[str, str]:
        return {"name": "ada", "csrf_token": "t"}

    @app.get("/api/v1/stats")
    def stats(_: Session, days: int, recent: int = 10) -> dict[str, object]:
        return {"days": days, "recent": recent, "hostile": HOSTILE}

    @app.get("/api/v1/runs")
    def running(_: Session) -> dict[str, object]:
        raise fastapi.HTTPException(403, "not yours")

    @app.get("/api/v1/schedules")
    def schedules(_: Session) -> fastapi.Response:
        return fastapi.Response("not json", media_type="text/plain")

    (static / "assets").mkdir()
    (static / "index.html").write_text(PAGE)
    serve.mount(app, static=static, session_cookie="kubeline_session")
    return app, seen


def client_of(app: fastapi.FastAPI, **kwargs) -> httpx.AsyncClient:  # type: ignore[no-untyped-def]
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://ui.test", **kwargs)


def inlined(html: str) -> dict[str, object] | None:
    found = re.search(r'<script type="application/json" id="kubeline-first">(.*?)</script>', html, re.S)
    return None if found is None else json.loads(found[1])


async def test_a_logged_in_page_carries_its_first_answers_escaped(tmp_path):
    app, _ = app_with(tmp_path)
    async with client_of(app, cookies={"kubeline_session": "good"}) as client:
        page = await client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert page.headers["cache-control"] == "no-store"
    data = inlined(page.text)
    assert data == {"/api/v1/auth/me": {"name": "ada", "csrf_token": "t"},
                    "/api/v1/stats?days=14&recent=0": {"days": 14, "recent": 0, "hostile": HOSTILE}}  # no 403, no text/plain
    # The document is the built one with the element before </body>, and the hostile value
    # opened no element and no comment: the only <script> tags are the page's own two.
    assert page.text.startswith(PAGE[:PAGE.index("</body>")]) and page.text.endswith("</body></html>")
    assert page.text.lower().count("<script") == 2 and page.text.lower().count("</script") == 2
    assert "<!--" not in page.text and "\u2028" not in page.text


async def test_no_session_no_data(tmp_path):
    app, seen = app_with(tmp_path)
    async with client_of(app) as client:
        anonymous = await client.get("/")
        assert inlined(anonymous.text) is None and anonymous.text == PAGE
        assert anonymous.headers["cache-control"] == "no-cache"
        # A bearer token in a page request is not a browser login: nothing is asked with it.
        bearer = await client.get("/", headers={"Authorization": "Bearer good"})
        assert inlined(bearer.text) is None
    assert seen == []  # without the session cookie the API is not even asked
    async with client_of(app, cookies={"kubeline_session": "expired"}) as client:
        stale = await client.get("/")
    assert inlined(stale.text) is None and stale.text == PAGE and stale.headers["cache-control"] == "no-store"


async def test_the_calls_carry_the_cookie_and_nothing_else_of_the_request(tmp_path):
    app, seen = app_with(tmp_path)
    async with client_of(app, cookies={"kubeline_session": "good"}) as client:
        page = await client.get("/runs/abc", headers={"Authorization": "Bearer other", "X-Csrf-Token": "x"})
    assert inlined(page.text) == {"/api/v1/auth/me": {"name": "ada", "csrf_token": "t"}}
    assert seen and all(set(headers) == {"host", "cookie", "accept"} for headers in seen), seen


async def test_a_session_that_does_not_log_in_gets_nothing_even_where_a_route_answers(tmp_path):
    app, _ = app_with(tmp_path)

    @app.get("/api/v1/runs/open")
    def open_run() -> dict[str, str]:  # answers anyone, but the page needs /auth/me to answer first
        return {"id": "open"}

    async with client_of(app, cookies={"kubeline_session": "expired"}) as client:
        page = await client.get("/runs/open")
    assert inlined(page.text) is None


def test_each_page_asks_what_its_first_render_asks():
    assert first.calls_for("/") == [first.ME, *first.DASHBOARD]
    assert first.calls_for("/runs/0193ab") == [first.ME, "/api/v1/runs/0193ab"]
    for other in ("/runs", "/pipelines/etl", "/runs/a/b", "/runs/%3Cx%3E"):
        assert first.calls_for(other) == [first.ME], other


def test_the_element_escapes_what_could_end_it():
    element = first.script({"/u": json.dumps({"v": HOSTILE, "n": 1}).encode()})
    body = element.decode()[len('<script type="application/json" id="kubeline-first">'):-len("</script>")]
    assert "<" not in body and ">" not in body and "&" not in body
    assert json.loads(body) == {"/u": {"v": HOSTILE, "n": 1}}


async def test_a_slow_or_failing_call_stays_out_and_the_others_go_in(tmp_path, caplog):
    app, _ = app_with(tmp_path)

    @app.get("/api/v1/slow")
    async def slow(_: Session) -> dict[str, str]:
        await asyncio.sleep(30)
        return {"late": "yes"}

    @app.get("/api/v1/broken")
    def broken(_: Session) -> dict[str, str]:
        raise RuntimeError("boom")

    scope = {"type": "http", "headers": [(b"host", b"ui.test")]}
    urls = [first.ME, "/api/v1/slow", "/api/v1/broken", "/api/v1/stats?days=3"]
    found = await first.answers(app, scope, cookie=b"kubeline_session=good", urls=urls, within=1.0)
    assert {url: json.loads(body) for url, body in found.items()} == {
        first.ME: {"name": "ada", "csrf_token": "t"}, "/api/v1/stats?days=3": {"days": 3, "recent": 10, "hostile": HOSTILE}}
    assert "GET /api/v1/broken for the page's first data failed" in caplog.text
