"""``kubeline.ui.serve`` on a bare FastAPI app: the SPA fallback, the assets, the not-built page,
and API paths never answered with the page."""

from __future__ import annotations

import os

import fastapi
import httpx

from kubeline.ui import serve


def app_with(static) -> fastapi.FastAPI:  # type: ignore[no-untyped-def]
    app = fastapi.FastAPI()

    @app.get("/api/v1/thing")
    def thing() -> dict[str, str]:
        return {"ok": "yes"}

    serve.mount(app, static=static)
    return app


def client_of(app: fastapi.FastAPI) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://ui.test")


async def test_built_ui_is_served_for_browser_paths(tmp_path):
    (tmp_path / "assets").mkdir()
    (tmp_path / "index.html").write_text('<div id="root"></div>')
    (tmp_path / "assets" / "app-1.js").write_text("console.log(1)")
    async with client_of(app_with(tmp_path)) as client:
        for path in ("/", "/runs/abc", "/pipelines/x/y"):
            page = await client.get(path)
            assert page.status_code == 200 and 'id="root"' in page.text and page.headers["cache-control"] == "no-cache"
        asset = await client.get("/assets/app-1.js")
        assert asset.status_code == 200 and "immutable" in asset.headers["cache-control"]
        assert (await client.get("/assets/missing.js")).status_code == 404
        assert (await client.get("/api/v1/thing")).json() == {"ok": "yes"}
        for reserved in ("/api/v1/nope", "/api", "/healthz", "/readyz", "/metrics"):
            assert (await client.get(reserved)).status_code == 404, reserved
        assert (await client.post("/runs/abc")).status_code == 404


async def test_without_a_build_the_page_says_how_to_build_it(tmp_path):
    async with client_of(app_with(tmp_path / "nothing")) as client:
        page = await client.get("/")
        assert page.status_code == 503
        assert "scripts/bootstrap" in page.text and "npm run build" in page.text
        assert (await client.get("/api/v1/thing")).status_code == 200


async def test_precompressed_files_go_to_browsers_that_accept_them(tmp_path):
    import gzip

    (tmp_path / "assets").mkdir()
    (tmp_path / "index.html").write_text('<div id="root"></div>')
    (tmp_path / "index.html.gz").write_bytes(gzip.compress(b'<div id="root">gz</div>'))
    (tmp_path / "assets" / "app-1.js").write_text("console.log(1)")
    (tmp_path / "assets" / "app-1.js.gz").write_bytes(gzip.compress(b"console.log('gz')"))
    (tmp_path / "assets" / "app-1.js.br").write_bytes(b"not really brotli")
    (tmp_path / "assets" / "plain-1.css").write_text("p{}")
    async with client_of(app_with(tmp_path)) as client:
        zipped = await client.get("/assets/app-1.js", headers={"Accept-Encoding": "gzip"})
        assert zipped.text == "console.log('gz')"  # httpx undid the gzip the header announced
        assert zipped.headers["content-encoding"] == "gzip" and zipped.headers["vary"] == "Accept-Encoding"
        assert zipped.headers["content-type"].startswith("text/javascript") and "immutable" in zipped.headers["cache-control"]
        async with client.stream("GET", "/assets/app-1.js", headers={"Accept-Encoding": "gzip, br;q=1"}) as brotli:
            assert brotli.headers["content-encoding"] == "br"  # preferred when accepted
            assert b"".join([chunk async for chunk in brotli.aiter_raw()]) == b"not really brotli"
        plain = await client.get("/assets/app-1.js", headers={"Accept-Encoding": "identity"})
        assert plain.text == "console.log(1)" and "content-encoding" not in plain.headers
        css = await client.get("/assets/plain-1.css", headers={"Accept-Encoding": "gzip, br"})
        assert css.text == "p{}" and "content-encoding" not in css.headers  # no variant built: as is
        page = await client.get("/runs/abc", headers={"Accept-Encoding": "gzip"})
        assert page.text == '<div id="root">gz</div>' and page.headers["content-encoding"] == "gzip"
        assert page.headers["cache-control"] == "no-cache" and page.headers["content-type"].startswith("text/html")


def test_a_build_older_than_its_sources_is_named(tmp_path):
    static, sources = tmp_path / "static", tmp_path / "ui"
    (sources / "src" / "pages").mkdir(parents=True)
    (sources / "package.json").write_text("{}")
    page = sources / "src" / "pages" / "Dashboard.tsx"
    page.write_text("export {}")
    assert serve.stale_build(static, sources) == ""  # not built: the not-built page says so
    static.mkdir()
    (static / "index.html").write_text("<div></div>")
    built = (static / "index.html").stat().st_mtime
    os.utime(page, (built - 60, built - 60))
    assert serve.stale_build(static, sources) == ""
    os.utime(page, (built + 60, built + 60))  # git pulled a change after the build
    why = serve.stale_build(static, sources)
    assert str(page) in why and "./scripts/bootstrap" in why
    assert serve.stale_build(static, tmp_path / "no-sources") == ""  # a wheel: nothing to compare
