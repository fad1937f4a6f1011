"""A page's first data, sent inside its ``index.html`` to a browser that logged in.

Without it the opened page asks for its data only once the HTML and the script bundle are in,
and on a small machine those requests then compete with the browser and with each other: the
dashboard's aggregates took ~30 ms to compute but ~150 ms to arrive. Here the server starts
those same GETs while it sends the document: the HTML up to ``</body>`` goes out at once (the
browser fetches and compiles the bundle meanwhile), then one ``<script type="application/json"
id="kubeline-first">`` with the answers, then the rest. A module script runs only once the
document is parsed, so the app finds the data in the page when it starts (ui/src/api/client.ts).

The answers come from the API itself, in process: each is a GET through the whole app (its
access checks, its routes, its response models) with the request's session cookie and nothing
else, so a page holds exactly what its browser could have asked for, and only with a session:
without the session cookie nothing is asked, and unless ``/api/v1/auth/me`` answers 200 for it
nothing is sent. Only 200 JSON answers go in; the app asks for anything missing as usual. Such
a page is personal: ``Cache-Control: no-store``.

The calls per page are the ones its first render makes, written as openapi-fetch writes them
(query order, arrays as repeated keys): a page takes an answer only for exactly that URL.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from typing import Any

from starlette import types

log = logging.getLogger("kubeline.ui")
ME = "/api/v1/auth/me"
DASHBOARD = ("/api/v1/stats?days=14&recent=0", "/api/v1/runs?state=running&limit=10", "/api/v1/schedules?count=1")
RUN_PAGE = re.compile(r"/runs/([0-9a-z-]{1,64})")
WAIT_SECONDS = 1.0  # the answers not in by then stay out (the app asks for them itself)
ELEMENT_ID = "kubeline-first"
# In a <script> element only "</script" and "<!--" are special; no "<" at all leaves none of
# them. Outside JSON strings none of these characters occurs, inside one the escape means the same.
_ESCAPES = {b"<": b"\\u003c", b">": b"\\u003e", b"&": b"\\u0026",
            "\u2028".encode(): b"\\u2028", "\u2029".encode(): b"\\u2029"}
_UNSAFE = re.compile(b"|".join(re.escape(k) for k in _ESCAPES))


def calls_for(path: str) -> list[str]:
    """The GETs the page at ``path`` makes for its first render (who is logged in first)."""
    calls = [ME]
    if path == "/":
        calls.extend(DASHBOARD)
    elif run := RUN_PAGE.fullmatch(path):
        calls.append(f"/api/v1/runs/{run[1]}")
    return calls


async def answers(app: types.ASGIApp, scope: types.Scope, *, cookie: bytes, urls: list[str],
                  within: float = WAIT_SECONDS) -> dict[str, bytes]:
    """The 200 JSON answers of ``app`` to GETs of ``urls`` carrying only ``cookie`` (the page
    request's Cookie header) that came ``within`` seconds, by URL; none at all unless
    ``/api/v1/auth/me`` is among them. A slow call holds the page back ``within`` at most: the
    app asks for what is missing once it runs."""
    calls = {url: asyncio.ensure_future(_get(app, scope, cookie=cookie, url=url)) for url in urls}
    try:
        await asyncio.wait(calls.values(), timeout=within)
    finally:
        for call in calls.values():
            call.cancel()
        await asyncio.gather(*calls.values(), return_exceptions=True)
    found = {}
    for url, call in calls.items():
        if call.cancelled():
            continue
        if (error := call.exception()) is not None:  # the app answered 500; nobody else logs it
            log.error("GET %s for the page's first data failed", url, exc_info=error)
        elif (body := call.result()) is not None:
            found[url] = body
    return found if ME in found else {}


def script(found: dict[str, bytes]) -> bytes:
    """The ``<script type="application/json">`` element holding ``found`` (raw JSON by URL),
    escaped so that no value can end the element or open a comment."""
    members = b",".join(json.dumps(url).encode() + b":" + body for url, body in found.items())
    text = _UNSAFE.sub(lambda m: _ESCAPES[m.group()], b"{" + members + b"}")
    return b'<script type="application/json" id="' + ELEMENT_ID.encode() + b'">' + text + b"</script>"


async def _get(app: types.ASGIApp, parent: types.Scope, *, cookie: bytes, url: str) -> bytes | None:
    path, _, query = url.partition("?")
    host = [(k, v) for k, v in parent.get("headers", []) if k == b"host"]
    scope: dict[str, Any] = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET",
        "scheme": parent.get("scheme", "http"), "server": parent.get("server"), "client": parent.get("client"),
        "root_path": parent.get("root_path", ""), "path": path, "raw_path": path.encode(),
        "query_string": query.encode(), "state": dict(parent.get("state") or {}),
        "headers": [*host, (b"cookie", cookie), (b"accept", b"application/json")],
    }
    status, json_body, chunks = 0, False, []
    sent = False

    async def receive() -> types.Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": b"", "more_body": False}
        await asyncio.Event().wait()  # the request has no more body; nothing disconnects
        raise AssertionError("unreachable")

    async def send(message: types.Message) -> None:
        nonlocal status, json_body
        if message["type"] == "http.response.start":
            status = int(message["status"])
            json_body = any(k.lower() == b"content-type" and v.split(b";")[0].strip() == b"application/json"
                            for k, v in message.get("headers", []))
        elif message["type"] == "http.response.body":
            chunks.append(message.get("body", b""))

    await app(scope, receive, send)
    return b"".join(chunks) if status == 200 and json_body else None
