"""Every endpoint of /api/v1 against a real server, good and bad input, SQLite and PostgreSQL."""

from __future__ import annotations

import json

import httpx
import pytest

from kubeline import client as client_
from kubeline.domain import errors


def problem(response: httpx.Response, status: int) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body = response.json()
    assert {"type", "title", "status", "detail", "instance"} <= body.keys()
    assert body["status"] == status and body["detail"]
    return body


def test_pipelines(client, server, http):
    names = [p.name for p in client.pipelines()]
    assert names == sorted(names) or set(names) >= {"hello", "slow"}
    hello = client.pipeline("hello")
    assert hello.stages == ["greet"] and hello.inputs["count"].type == "integer"
    assert client.pipeline_spec("hello")["stages"][0]["id"] == "greet"
    reloaded = client.reload()
    assert set(reloaded.loaded) >= {"hello", "flaky"} and reloaded.problems == []
    body = problem(http.get(f"{server.url}/api/v1/pipelines/nope"), 404)
    assert "nope" in body["detail"]
    with pytest.raises(errors.NotFoundError):
        client.pipeline("nope")


def test_validate(client, server, http):
    good = client.validate(spec={"stages": [{"id": "a", "type": "shell", "command": "true"}]})
    assert good.valid and good.stages == ["a"]
    bad = client.validate(spec={"stages": [{"id": "a", "type": "shell", "command": "x", "dependsOn": ["b"]}],
                                "schedules": [{"cron": "nope"}]})
    assert not bad.valid and len(bad.problems) >= 2
    folder = client.validate(files={"main.py": "print(1)"}, name="folder-one")
    assert folder.valid and folder.stages == ["main"]
    problem(http.post(f"{server.url}/api/v1/pipelines/validate", json={"files": {"../x": ""}}), 422)
    problem(http.post(f"{server.url}/api/v1/pipelines/validate", json={}), 422)
    problem(http.post(f"{server.url}/api/v1/pipelines/validate", json={"spec": {}, "bogus": 1}), 422)


def test_create_run_and_read_it(client, server, http):
    response = http.post(f"{server.url}/api/v1/runs", json={"pipeline": "hello", "inputs": {"name": "bo"}})
    assert response.status_code == 201
    run_id = response.json()["id"]
    assert response.headers["location"] == f"/api/v1/runs/{run_id}"
    final = client.wait(run_id, timeout=60)
    assert final.state.value == "succeeded" and final.triggered_by.kind == "api"
    assert final.stages and final.stages[0].outputs == {"greeted": "bo"}
    assert final.attempts and final.attempts[0].state.value == "succeeded"
    attempt = final.attempts[0]
    assert client.attempts(run_id)[0].id == attempt.id
    assert client.attempt(run_id, attempt.id).number == 1
    assert client.attempt_outputs(run_id, attempt.id) == {"greeted": "bo"}
    text = client.logs(run_id)
    assert [line for line in text.splitlines() if "hello bo" in line and "stdout" in line][-1].endswith("hello bo 3")
    events = client.events(run_id)
    assert events[0].to_state == "queued" and events[-1].to_state == "succeeded"
    assert client.events(run_id, after=events[-2].id) == events[-1:]
    problem(http.get(f"{server.url}/api/v1/runs/{run_id}/attempts/nope"), 404)
    problem(http.get(f"{server.url}/api/v1/runs/{run_id}/logs", params={"stage": "nope"}), 404)


def test_run_errors(client, server, http):
    url = f"{server.url}/api/v1/runs"
    assert "nope" in problem(http.post(url, json={"pipeline": "nope"}), 404)["detail"]
    body = problem(http.post(url, json={"pipeline": "hello", "inputs": {"count": "many"}}), 422)
    assert "count" in body["detail"]
    assert "unknown input" in problem(http.post(url, json={"pipeline": "hello", "inputs": {"cnt": 1}}), 422)["detail"]
    bad_json = problem(http.post(url, content=b'{"pipeline": ', headers={"content-type": "application/json"}), 422)
    assert bad_json["errors"]
    problem(http.post(url, json={"pipeline": 5}), 422)
    problem(http.post(url, json=[1, 2]), 422)
    problem(http.get(f"{url}/nope"), 404)
    problem(http.post(f"{url}/nope/cancel"), 404)
    problem(http.get(url, params={"state": "sleeping"}), 422)
    problem(http.get(url, params={"limit": 0}), 422)
    with pytest.raises(errors.InvalidInputError):
        client.create_run("hello", {"count": "many"})


def test_oversized_bodies_are_413(server, http):
    url = f"{server.url}/api/v1/runs"
    big = json.dumps({"pipeline": "hello", "inputs": {"name": "x" * 100_000}}).encode()
    body = problem(http.post(url, content=big, headers={"content-type": "application/json"}), 413)
    assert "larger than" in body["detail"]

    def chunks():  # no Content-Length: counted while streaming
        for _ in range(20):
            yield b" " * 10_000

    problem(http.post(url, content=chunks(), headers={"content-type": "application/json"}), 413)


def test_cancel(client, server, http):
    run = client.create_run("slow")
    for line in client.follow_logs(run.id):
        if line.text == "started":
            break
    cancelled = client.cancel(run.id)
    assert cancelled.cancel_requested
    assert client.wait(run.id, timeout=60).state.value == "cancelled"
    body = problem(http.post(f"{server.url}/api/v1/runs/{run.id}/cancel"), 409)
    assert "already cancelled" in body["detail"]
    with pytest.raises(errors.ConflictError):
        client.cancel(run.id)


def test_list_filters_and_cursor(client):
    ids = [client.create_run("hello", {"count": 1}).id for _ in range(5)]
    for run_id in ids:
        client.wait(run_id, timeout=60)
    first = client.runs(pipeline="hello", limit=2)
    assert [r.id for r in first.items] == ids[::-1][:2] and first.next
    everything = list(client.iter_runs(pipeline="hello", limit=2))
    assert [r.id for r in everything] == ids[::-1]
    assert client.runs(pipeline="hello", state=["failed"]).items == []
    assert len(client.runs(pipeline="hello", state=["succeeded"], limit=10).items) == 5
    assert len(client.runs(trigger="api", limit=10).items) == 5
    assert client.runs(trigger="schedule").items == []
    last = client.runs(pipeline="hello", limit=5)
    assert last.next is None


def test_retry_from_failed_stage(client, settings, tmp_path):
    run = client.create_run("flaky")
    failed = client.wait(run.id, timeout=60)
    assert failed.state.value == "failed"
    with pytest.raises(errors.ConflictError):
        client.retry(client.create_run("hello", {"count": 1}).id)  # not final yet, or succeeded
    (tmp_path / "mark").write_text("")
    retried = client.retry(run.id)
    assert retried.triggered_by.kind == "retry" and retried.parent_run_id == run.id
    done = client.wait(retried.id, timeout=60)
    assert done.state.value == "succeeded"
    stages = {s.stage_id: s for s in done.stages}
    assert stages["first"].outputs == {"n": 1} and stages["first"].attempts == 0  # copied, not re-run
    assert (tmp_path / "mark.count").read_text().count("first") == 1
    with pytest.raises(errors.ConflictError):
        client.retry(retried.id)


def test_secrets(client, server, http):
    client.set_secret("API_TOKEN", "s3cr3t")
    assert client.secrets() == ["API_TOKEN"]
    listing = http.get(f"{server.url}/api/v1/secrets").text
    assert "s3cr3t" not in listing
    assert http.get(f"{server.url}/api/v1/secrets/API_TOKEN").status_code in (404, 405)
    client.delete_secret("API_TOKEN")
    assert client.secrets() == []
    with pytest.raises(errors.NotFoundError):
        client.delete_secret("API_TOKEN")
    problem(http.put(f"{server.url}/api/v1/secrets/bad-name", json={"value": "x"}), 422)
    problem(http.put(f"{server.url}/api/v1/secrets/OK", json={}), 422)


def test_script_runs(client, server, http):
    code = "from kubeline import task\nprint('working on', task.input('n'))\ntask.set_output('n', task.input('n') + 1)\n"
    result = client.run_script(code, {"n": 41}, wait=True, wait_timeout=180)
    assert result.success, result.logs
    assert result.outputs == {"n": 42}
    assert "working on 41" in (result.logs or "")
    failing = client.run_script("raise SystemExit(3)", wait=True, wait_timeout=180)
    assert failing.success is False and failing.run.state.value == "failed"
    queued = client.run_script("print(1)")
    assert queued.outputs is None and client.wait(queued.run.id, timeout=180).state.value == "succeeded"
    too_big = "#" * 300_000
    problem(http.post(f"{server.url}/api/v1/scripts", json={"code": too_big}), 413)
    problem(http.post(f"{server.url}/api/v1/scripts", json={"code": ""}), 422)


def test_health_ready_metrics(client, server, http):
    assert http.get(f"{server.url}/healthz").json()["status"] == "ok"
    ready = http.get(f"{server.url}/readyz")
    assert ready.status_code == 200 and ready.json()["checks"]["migrations"] == "current"
    run = client.create_run("hello", {"count": 1})
    client.wait(run.id, timeout=60)
    text = client.metrics()
    assert 'kubeline_runs_total{pipeline="hello",status="succeeded"}' in text
    for name in ("kubeline_run_duration_seconds_bucket", "kubeline_stage_duration_seconds_bucket",
                 "kubeline_queue_depth", "kubeline_running_attempts", "kubeline_scheduler_lag_seconds",
                 "kubeline_run_errors_total"):
        assert name in text
    assert client.ready()


def test_openapi_has_examples(server, http):
    spec = http.get(f"{server.url}/api/v1/openapi.json").json()
    assert "/api/v1/runs" in spec["paths"] and "/api/v1/runs/{run_id}/logs/stream" in spec["paths"]
    assert spec["components"]["schemas"]["RunCreate"]["examples"]


async def test_async_client(server):
    async with client_.AsyncClient(server.url, token=server.token) as api:
        run = await api.create_run("hello", {"count": 2, "name": "async"})
        lines = [line.text async for line in api.follow_logs(run.id)]
        assert "hello async 2" in lines
        assert (await api.wait(run.id, timeout=60)).state.value == "succeeded"
        with pytest.raises(errors.NotFoundError):
            await api.run("nope")
