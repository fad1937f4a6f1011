"""PUT /api/v1/attempts/{id}/io: token checked in constant time, only while the attempt runs."""

from __future__ import annotations

import gzip
import json
import pathlib

import httpx

from kubeline import bootstrap, settings
from kubeline.api import app as app_
from kubeline.domain import runs, specs, states
from kubeline.executors.kubernetes import executor


async def _running_attempt(kl: bootstrap.Kubeline, token: str) -> runs.Attempt:
    spec = specs.PipelineSpec.model_validate({"stages": [{"id": "main", "type": "shell", "command": "true"}]})
    run = runs.Run(id=runs.new_id(), pipeline="p", inputs={}, spec=spec)
    await kl.store.upsert_pipeline(runs.Pipeline(name="p", spec=spec))
    await kl.store.create_run(run, [runs.StageRun(run_id=run.id, stage_id="main")])
    attempt = await kl.store.create_attempt(runs.Attempt(id=runs.new_id(), run_id=run.id, stage_id="main",
                                                         number=1, executor="kubernetes"))
    return await kl.store.transition_attempt(attempt.id, states.AttemptState.RUNNING, handle={
        "token_sha256": executor.token_digest(token), "job": "kl-x"})


async def test_upload_auth_states_and_large_gzip_bodies(tmp_path: pathlib.Path) -> None:
    async with bootstrap.open_kubeline(settings.Settings(home=tmp_path, secret_key=None)) as kl:
        attempt = await _running_attempt(kl, "good-token")
        transport = httpx.ASGITransport(app=app_.create_upload_app(kl))
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
            url = f"/api/v1/attempts/{attempt.id}/io"
            small = {"outputs": {"n": 1}, "route": None}
            body = {"outputs": {"big": "z" * 2_000_000}, "route": "left"}  # over the 1 MiB limit unless gzipped
            assert (await http.put(url, json=body)).status_code == 413
            assert (await http.put(url, json=small)).status_code == 401
            wrong = await http.put(url, json=small, headers={"Authorization": "Bearer nope"})
            assert wrong.status_code == 401 and "KUBELINE_ATTEMPT_TOKEN" in wrong.text
            unknown = await http.put("/api/v1/attempts/nope/io", json=small,
                                     headers={"Authorization": "Bearer good-token"})
            assert unknown.status_code == 401
            bad = await http.put(url, json={"outputs": [1]}, headers={"Authorization": "Bearer good-token"})
            assert bad.status_code == 400
            ok = await http.put(url, content=gzip.compress(json.dumps(body).encode()), headers={
                "Authorization": "Bearer good-token", "Content-Encoding": "gzip",
                "Content-Type": "application/json"})
            assert ok.status_code == 204, ok.text
            stored = await kl.store.get_attempt(attempt.id)
            assert len(stored.outputs["big"]) == 2_000_000
            assert stored.handle["io"]["route"] == "left" and stored.handle["job"] == "kl-x"
            await kl.store.transition_attempt(attempt.id, states.AttemptState.SUCCEEDED)
            late = await http.put(url, json=small, headers={"Authorization": "Bearer good-token"})
            assert late.status_code == 409


async def test_a_short_stage_log_comes_with_the_upload_checked(tmp_path: pathlib.Path) -> None:
    async with bootstrap.open_kubeline(settings.Settings(home=tmp_path, secret_key=None)) as kl:
        attempt = await _running_attempt(kl, "t")
        transport = httpx.ASGITransport(app=app_.create_upload_app(kl))
        auth = {"Authorization": "Bearer t"}
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
            url = f"/api/v1/attempts/{attempt.id}/io"
            for bad in ({"x": 1}, [[1.0, "stdin", "x"]], [[True, "stdout", "x"]], [[1.0, "stdout"]],
                        [["now", "stdout", "x"]], [[1.0, "stdout", 3]]):
                answer = await http.put(url, json={"outputs": {}, "route": None, "log": bad}, headers=auth)
                assert answer.status_code == 400 and "unix time" in answer.text, (bad, answer.text)
            huge = [[1.0, "stdout", "x" * 1000]] * 300
            answer = await http.put(url, content=gzip.compress(json.dumps(
                {"outputs": {}, "route": None, "log": huge}).encode()),
                headers={**auth, "Content-Encoding": "gzip", "Content-Type": "application/json"})
            assert answer.status_code == 413 and "longer than" in answer.text
            assert "io" not in (await kl.store.get_attempt(attempt.id)).handle  # nothing half-stored
            log = [[1796148062.5, "stdout", "hello"], [1796148062.6, "stderr", "oops"]]
            ok = await http.put(url, json={"outputs": {"n": 1}, "route": None, "log": log}, headers=auth)
            assert ok.status_code == 204, ok.text
            stored = await kl.store.get_attempt(attempt.id)
            assert stored.handle["io"]["log"] == log and stored.outputs == {"n": 1}


async def test_uploaded_secrets_are_masked_before_they_are_stored(tmp_path: pathlib.Path) -> None:
    async with bootstrap.open_kubeline(settings.Settings(home=tmp_path, secret_key=None)) as kl:
        await kl.secrets.set("TOKEN", "upload-secret-42")
        spec = specs.PipelineSpec.model_validate(
            {"secrets": ["TOKEN"], "stages": [{"id": "main", "type": "shell", "command": "true"}]})
        run = runs.Run(id=runs.new_id(), pipeline="p", inputs={}, spec=spec)
        await kl.store.create_run(run, [runs.StageRun(run_id=run.id, stage_id="main")])
        attempt = await kl.store.create_attempt(runs.Attempt(id=runs.new_id(), run_id=run.id, stage_id="main",
                                                             number=1, executor="kubernetes"))
        await kl.store.transition_attempt(attempt.id, states.AttemptState.RUNNING,
                                          handle={"token_sha256": executor.token_digest("t")})
        transport = httpx.ASGITransport(app=app_.create_upload_app(kl))
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
            body = {"outputs": {"echo": "upload-secret-42", "list": ["a upload-secret-42"]},
                    "route": "upload-secret-42", "log": [[1796148062.5, "stdout", "is upload-secret-42"]]}
            answer = await http.put(f"/api/v1/attempts/{attempt.id}/io", json=body,
                                    headers={"Authorization": "Bearer t"})
            assert answer.status_code == 204, answer.text
        stored = await kl.store.get_attempt(attempt.id)
        assert stored.outputs == {"echo": "***", "list": ["a ***"]}
        assert stored.handle["io"]["route"] == "***" and stored.handle["io"]["log"] == [[1796148062.5, "stdout", "is ***"]]
