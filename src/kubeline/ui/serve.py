"""Serve the built UI from the package, with a fallback to ``index.html`` for browser routes.

The build writes each text file also compressed (``.br``, ``.gz``: ui/vite.config.ts); a browser
that accepts one of them gets that file as is, so nothing is compressed while serving. Assets have
hashed names and are cached for a year; ``index.html`` is revalidated every time.

A browser that logged in gets ``index.html`` with the opened page's first data inside it
(``kubeline.ui.first``): streamed, uncompressed, never cached.
"""

from __future__ import annotations

import asyncio
import contextlib
import mimetypes
import pathlib
from collections.abc import AsyncIterator

import fastapi
from fastapi import responses, staticfiles
from starlette import types

from kubeline.ui import first

STATIC = pathlib.Path(__file__).with_name("static")
# In a source checkout (an editable install) the UI's sources sit beside the package; what the
# build reads from them (scripts/bootstrap hashes the same list to decide whether to rebuild).
SOURCES = pathlib.Path(__file__).resolve().parents[3] / "ui"
SOURCE_NAMES = ("src", "index.html", "package.json", "package-lock.json", "vite.config.ts", "tsconfig.json")
RESERVED = ("/api/", "/api", "/healthz", "/readyz", "/metrics", "/assets/")
NOT_BUILT = """<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Kubeline</title></head>
<body style="font-family:sans-serif;max-width:40rem;margin:3rem auto;line-height:1.5">
<h1>Kubeline's web UI is not built in this install</h1>
<p>The API is up (<a href="/api/v1/docs">/api/v1/docs</a>). To build the UI from a source checkout run
<code>./scripts/bootstrap</code> (needs Node.js 20 and npm), or <code>cd ui &amp;&amp; npm ci &amp;&amp;
npm run build</code>, then reload this page. Wheels built after that include it.</p></body></html>"""


ENCODINGS = (("br", ".br"), ("gzip", ".gz"))  # preferred first


def encoded(file: pathlib.Path, scope: types.Scope) -> tuple[pathlib.Path, str]:
    """The precompressed variant of ``file`` the request accepts and the build made, and its
    Content-Encoding; else ``file`` itself and ''."""
    accepted = {part.split(";")[0].strip().lower()
                for name, value in scope.get("headers", []) if name == b"accept-encoding"
                for part in value.decode("latin-1").split(",")}
    for encoding, suffix in ENCODINGS:
        variant = file.with_name(file.name + suffix)
        if encoding in accepted and variant.is_file():
            return variant, encoding
    return file, ""


def is_built(static: pathlib.Path = STATIC) -> bool:
    return (static / "index.html").is_file()


def stale_build(static: pathlib.Path = STATIC, sources: pathlib.Path = SOURCES) -> str:
    """Why the built UI is older than its sources (a source checkout updated by git without
    ``scripts/bootstrap``: the server would serve the previous build), or '' when it is not, or
    there are no sources (a wheel) or no build."""
    index = static / "index.html"
    if not index.is_file() or not (sources / "package.json").is_file():
        return ""
    built = index.stat().st_mtime
    for name in SOURCE_NAMES:
        top = sources / name
        for path in ([top] if top.is_file() else top.rglob("*") if top.is_dir() else []):
            if path.is_file() and path.stat().st_mtime > built:
                return (f"the web UI in {static} was built before {path} changed, so the server serves "
                        "the previous UI; run ./scripts/bootstrap (it rebuilds the UI) and restart")
    return ""


def mount(app: fastapi.FastAPI, *, static: pathlib.Path = STATIC, session_cookie: str = "") -> None:
    """Serve the UI on ``app``: hashed assets, and ``index.html`` for every other unmatched GET;
    with ``session_cookie`` (the name of a browser login's cookie) a request that carries it
    gets the page's first data inside the page (``kubeline.ui.first``)."""
    if (static / "assets").is_dir():
        app.mount("/assets", _Assets(directory=static / "assets"), name="ui-assets")
    app.router.default = _Fallback(app.router.default, static=static, session_cookie=session_cookie)


class _Assets(staticfiles.StaticFiles):
    async def get_response(self, path: str, scope: types.Scope) -> responses.Response:
        assert self.directory is not None
        wanted = pathlib.Path(self.directory) / path
        variant, encoding = encoded(wanted, scope) if wanted.suffix not in (".br", ".gz") else (wanted, "")
        response = await super().get_response(path + variant.name[len(wanted.name):], scope)
        if response.status_code in (200, 304):
            response.headers["Cache-Control"] = "public, max-age=31536000, immutable"
            response.headers["Vary"] = "Accept-Encoding"
            if encoding:
                response.headers["Content-Encoding"] = encoding
                response.headers["Content-Type"] = _media_type(wanted)
        return response


def _media_type(file: pathlib.Path) -> str:
    found = mimetypes.guess_type(file.name)[0] or "application/octet-stream"
    return f"{found}; charset=utf-8" if found.startswith("text/") or found.endswith("javascript") else found


class _Fallback:
    """The router's "no route matched" handler: the SPA for browser paths, the API's 404 otherwise."""

    def __init__(self, default: types.ASGIApp, *, static: pathlib.Path, session_cookie: str) -> None:
        self.default = default
        self.static = static
        self.session_cookie = session_cookie

    async def __call__(self, scope: types.Scope, receive: types.Receive, send: types.Send) -> None:
        path: str = scope.get("path", "")
        if (scope["type"] != "http" or scope.get("method") not in ("GET", "HEAD")
                or any(path == p.rstrip("/") or path.startswith(p) for p in RESERVED)):
            await self.default(scope, receive, send)
            return
        index = self.static / "index.html"
        cookie = _cookie_header(scope, self.session_cookie) if scope["method"] == "GET" else b""
        if not index.is_file():
            result: responses.Response = responses.HTMLResponse(NOT_BUILT, status_code=503)
        elif cookie:
            page = _with_data(index.read_bytes(), app=scope["app"], scope=scope, cookie=cookie,
                              urls=first.calls_for(path))
            result = responses.StreamingResponse(page, media_type="text/html",
                                                 headers={"Cache-Control": "no-store", "Vary": "Cookie"})
        else:
            file, encoding = encoded(index, scope)
            result = responses.FileResponse(file, media_type="text/html", headers={
                "Cache-Control": "no-cache", "Vary": "Accept-Encoding",
                **({"Content-Encoding": encoding} if encoding else {})})
        await result(scope, receive, send)


def _cookie_header(scope: types.Scope, name: str) -> bytes:
    """The request's Cookie header when it carries the cookie ``name`` (else b'')."""
    if not name:
        return b""
    wanted = name.encode() + b"="
    for key, value in scope.get("headers", []):
        if key == b"cookie" and any(part.strip().startswith(wanted) for part in value.split(b";")):
            return bytes(value)
    return b""


async def _with_data(html: bytes, *, app: types.ASGIApp, scope: types.Scope, cookie: bytes,
                     urls: list[str]) -> AsyncIterator[bytes]:
    """``html`` up to ``</body>`` at once, then the page's first data (asked for meanwhile:
    ``first.answers``) in its element, when there is any, then the rest."""
    found = asyncio.ensure_future(first.answers(app, scope, cookie=cookie, urls=urls))
    cut = html.rfind(b"</body>")
    cut = len(html) if cut < 0 else cut
    try:
        yield html[:cut]
        data = await found
        yield (first.script(data) if data else b"") + html[cut:]
    finally:
        if not found.done():
            found.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await found
