"""Webhook and schedule routes on a real app over SQLite and PostgreSQL (in-process ASGI)."""

from __future__ import annotations

import json
import pathlib
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from kubeline import bootstrap, settings, testing
from kubeline.api import app as app_
from kubeline.api.routes import hooks, schedules
from kubeline.domain import runs, specs
from kubeline.scheduler import webhooks

SECRET = "s3cret-value"


def pipeline(name: str, spec: dict[str, Any]) -> runs.Pipeline:
    full = {"stages": [{"id": "a", "type": "shell", "command": "true"}], **spec}
    return runs.Pipeline(name=name, spec=specs.PipelineSpec.model_validate(full), source="api")


SIGNED = pipeline("signed", {
    "inputs": {"day": {"type": "string", "default": "today"}, "n": {"type": "integer", "default": 1}},
    "triggers": {"webhook": {"enabled": True, "secret": "HOOK_SECRET", "rate_limit": 3}},
    "schedules": [{"id": "nightly", "cron": "0 2 * * *", "timezone": "Europe/Berlin", "inputs": {"day": "yesterday"},
                   "webhook_key": "nightly-hook"}],
})
OPEN = pipeline("open", {"triggers": {"webhook": {"enabled": True, "key": "go"}}})
OFF = pipeline("off", {"triggers": {"webhook": {"enabled": False}}})


@pytest.fixture
async def client(tmp_path: pathlib.Path, database_url: str) -> AsyncIterator[httpx.AsyncClient]:
    config = settings.Settings(home=tmp_path / "home", database_url=database_url, max_request_bytes=4096)
    async with bootstrap.open_kubeline(config) as kl:
        for p in (SIGNED, OPEN, OFF):
            await kl.store.upsert_pipeline(p)
        await kl.secrets.set("HOOK_SECRET", SECRET)
        app = app_.create_app(kl)
        paths = {getattr(r, "path", "") for r in app.routes}
        if "/api/v1/hooks/{pipeline}/{trigger}" not in paths:
            app.include_router(hooks.router, prefix=app_.API_PREFIX)
        if "/api/v1/schedules" not in paths:
            app.include_router(schedules.router, prefix=app_.API_PREFIX)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1",
                                     headers=await testing.admin_headers(kl)) as http:
            http.kl = kl  # type: ignore[attr-defined]
            yield http
        await kl.engine.shutdown()


def signed(body: bytes, *, secret: str = SECRET, at: float | None = None, delivery: str | None = None) -> dict[str, str]:
    headers = {"X-Kubeline-Signature": webhooks.sign(secret, body),
               "X-Kubeline-Timestamp": str(int(time.time() if at is None else at)),
               "Content-Type": "application/json"}
    if delivery:
        headers["X-Kubeline-Delivery"] = delivery
    return headers


async def test_a_signed_webhook_starts_a_run_with_the_body_as_inputs(client: httpx.AsyncClient) -> None:
    body = json.dumps({"day": "2024-05-01", "n": 2}).encode()
    response = await client.post("/api/v1/hooks/signed/default", content=body, headers=signed(body, delivery="d1"))
    assert response.status_code == 202, response.text
    out = response.json()
    assert out["triggered_by"] == "webhook:default" and out["state"] == "queued"
    run = await client.kl.store.get_run(out["run_id"])  # type: ignore[attr-defined]
    assert run.inputs == {"day": "2024-05-01", "n": 2}
    assert run.triggered_by == runs.TriggeredBy(kind=runs.TriggerKind.WEBHOOK, detail="default")


async def test_a_schedule_webhook_key_runs_that_run_config(client: httpx.AsyncClient) -> None:
    body = b"{}"
    response = await client.post("/api/v1/hooks/signed/nightly-hook", content=body, headers=signed(body))
    assert response.status_code == 202, response.text
    run = await client.kl.store.get_run(response.json()["run_id"])  # type: ignore[attr-defined]
    assert run.schedule_id == "nightly" and run.inputs["day"] == "yesterday"


@pytest.mark.parametrize(("headers", "fragment"), [
    ({}, "missing X-Kubeline-Signature"),
    ({"X-Kubeline-Signature": "sha256=00"}, "does not match"),
    ({"X-Kubeline-Signature": webhooks.sign("wrong", b"{}")}, "does not match"),
    ({"X-Kubeline-Signature": webhooks.sign(SECRET, b"{}")}, "missing X-Kubeline-Timestamp"),
    ({"X-Kubeline-Signature": webhooks.sign(SECRET, b"{}"), "X-Kubeline-Timestamp": "yesterday"}, "not a Unix time"),
])
async def test_bad_signatures_are_401(client: httpx.AsyncClient, headers: dict[str, str], fragment: str) -> None:
    response = await client.post("/api/v1/hooks/signed/default", content=b"{}", headers=headers)
    assert response.status_code == 401
    assert response.headers["content-type"].startswith("application/problem+json")
    assert fragment in response.json()["detail"]


async def test_stale_timestamps_and_replays_are_refused(client: httpx.AsyncClient) -> None:
    old = await client.post("/api/v1/hooks/signed/default", content=b"{}", headers=signed(b"{}", at=time.time() - 3600))
    assert old.status_code == 401 and "tolerance" in old.json()["detail"]
    first = await client.post("/api/v1/hooks/signed/default", content=b"{}", headers=signed(b"{}", delivery="x"))
    assert first.status_code == 202
    again = await client.post("/api/v1/hooks/signed/default", content=b"{}", headers=signed(b"{}", delivery="x"))
    assert again.status_code == 409 and "replay" in again.json()["detail"]
    body = b'{"n": 5}'  # without a delivery id, the signature identifies the delivery
    assert (await client.post("/api/v1/hooks/signed/default", content=body, headers=signed(body))).status_code == 202
    assert (await client.post("/api/v1/hooks/signed/default", content=body, headers=signed(body))).status_code == 409


async def test_rate_limit_answers_429_with_retry_after(client: httpx.AsyncClient) -> None:
    codes = []
    for i in range(4):
        r = await client.post("/api/v1/hooks/signed/default", content=b"{}", headers=signed(b"{}", delivery=f"r{i}"))
        codes.append(r.status_code)
    assert codes == [202, 202, 202, 429]
    assert 1 <= int(r.headers["Retry-After"]) <= 60
    assert "3 requests per minute" in r.json()["detail"]


@pytest.mark.parametrize(("body", "fragment"), [
    (b"not json", "not JSON"), (b"[1, 2]", "JSON list"), (b'{"n": "many"}', "n"), (b'{"extra": 1}', "extra"),
])
async def test_invalid_bodies_are_422(client: httpx.AsyncClient, body: bytes, fragment: str) -> None:
    response = await client.post("/api/v1/hooks/signed/default", content=body, headers=signed(body))
    assert response.status_code == 422, response.text
    assert fragment in response.json()["detail"]


async def test_unknown_or_disabled_hooks_are_404_and_big_bodies_413(client: httpx.AsyncClient) -> None:
    for path in ("/api/v1/hooks/nope/default", "/api/v1/hooks/off/default", "/api/v1/hooks/open/default",
                 "/api/v1/hooks/signed/other"):
        response = await client.post(path, content=b"{}")
        assert response.status_code == 404, path
    assert "its webhooks: go" in (await client.post("/api/v1/hooks/open/default", content=b"{}")).json()["detail"]
    big = json.dumps({"day": "x" * 10_000}).encode()
    assert (await client.post("/api/v1/hooks/signed/default", content=big, headers=signed(big))).status_code == 413


async def test_an_unsigned_webhook_needs_no_signature(client: httpx.AsyncClient) -> None:
    response = await client.post("/api/v1/hooks/open/go", content=b"")
    assert response.status_code == 202
    assert response.json()["triggered_by"] == "webhook:go"


async def test_schedules_list_enable_disable(client: httpx.AsyncClient) -> None:
    listed = (await client.get("/api/v1/schedules", params={"count": 3})).json()
    [nightly] = [s for s in listed if s["key"] == "signed/nightly"]
    assert nightly["enabled"] and nightly["kind"] == "cron" and len(nightly["next_fires"]) == 3
    assert nightly["next_fires"][0].endswith(("T01:00:00Z", "T00:00:00Z"))  # 02:00 Berlin
    off = await client.post("/api/v1/pipelines/signed/schedules/nightly/disable")
    assert off.status_code == 200 and off.json()["enabled"] is False and off.json()["override"] is False
    assert off.json()["next_fires"] == []
    [again] = (await client.get("/api/v1/pipelines/signed/schedules")).json()
    assert again["enabled"] is False
    on = await client.post("/api/v1/pipelines/signed/schedules/nightly/enable")
    assert on.json()["enabled"] is True
    missing = await client.post("/api/v1/pipelines/signed/schedules/nope/enable")
    assert missing.status_code == 404 and "its schedules: nightly" in missing.json()["detail"]
    assert (await client.get("/api/v1/pipelines/nope/schedules")).status_code == 404
    assert (await client.get("/api/v1/schedules", params={"count": 1000})).status_code == 422
