"""Client error mapping, the SSE parser, the JSON log formatter and the metrics feed (no server)."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import logging
import pathlib

import httpx
import pytest

from kubeline import client as client_
from kubeline import metrics, server_logs
from kubeline.api import schemas, sse
from kubeline.api.routes import streams
from kubeline.domain import errors, runs, specs, states
from kubeline.engine import engine as engine_
from kubeline.logs import lines
from kubeline.logs import store as log_store
from kubeline.storage.sql import store as sql_store_
from kubeline.testing import executors as fake


def _problem(status: int, **extra: object) -> httpx.Response:
    body = {"type": "about:blank", "title": "t", "status": status, "detail": "what to do", "instance": "/x", **extra}
    return httpx.Response(status, json=body, headers={"content-type": "application/problem+json"})


@pytest.mark.parametrize(("status", "kind"), [(404, errors.NotFoundError), (409, errors.ConflictError),
                                              (422, errors.InvalidInputError), (413, client_.ApiError),
                                              (500, client_.ApiError)])
def test_problems_become_domain_errors(status, kind):
    with pytest.raises(kind) as caught:
        client_.raise_for_problem(_problem(status))
    assert caught.value.status == status and "what to do" in str(caught.value)


def test_spec_problems_and_non_json_errors():
    problems = [{"file": "p/pipeline.yaml", "location": "stages[0]", "message": "bad", "hint": "fix"}]
    with pytest.raises(errors.SpecError) as caught:
        client_.raise_for_problem(_problem(422, problems=problems))
    assert caught.value.problems[0].hint == "fix"
    with pytest.raises(client_.ApiError):
        client_.raise_for_problem(httpx.Response(502, text="bad gateway"))
    client_.raise_for_problem(httpx.Response(200))


def test_sse_parser():
    parser = client_._SseParser()
    frames = [parser.feed(line) for line in
              ["retry: 1000", "", ": comment", "id: a/1/10", "event: log", "data: {\"x\":", "data: 1}", ""]]
    assert [f for f in frames if f] == [("log", "a/1/10", "{\"x\":\n1}")]


def test_a_log_frame_carries_the_documented_line():
    """The log stream writes each line with pydantic-core from the LogLine itself, not through the
    LogLineOut model the OpenAPI document gives: the two must say the same."""
    at = dt.datetime(2026, 12, 7, 14, 0, 0, 123456, tzinfo=dt.UTC)
    texts = ["plain", 'quote " and \\ backslash', "new\nline\r", "\x00\x1b[31mred\u2028", "ünïcødé ✓"]
    batch = [lines.LogLine(at=at, stream="stderr", text=text, stage_id="s-1", attempt=2, cursor=f"s-1/2/{i}")
             for i, text in enumerate(texts)]
    parser = client_._SseParser()
    body = b"".join(sse.frame(data_json=streams._LOG_LINE.dump_json(line), event_type="log", event_id=line.cursor)
                    for line in batch)
    frames = [f for f in (parser.feed(raw) for raw in body.decode().split("\n")) if f]
    assert [(event, frame_id) for event, frame_id, _ in frames] == [("log", line.cursor) for line in batch]
    documented = [schemas.LogLineOut(**dataclasses.asdict(line)).model_dump(mode="json") for line in batch]
    assert [json.loads(data) for _, _, data in frames] == documented


def test_json_log_lines():
    record = logging.LogRecord("kubeline.server", logging.INFO, __file__, 1, "run %s", ("r1",), None)
    record.run_id = "r1"
    entry = json.loads(server_logs.JsonFormatter().format(record))
    assert entry["message"] == "run r1" and entry["run_id"] == "r1" and entry["level"] == "info"


class _Secrets:
    async def resolve(self, names: list[str]) -> dict[str, str]:
        return {}

    def decrypt_env(self, encrypted_env: dict[str, str]) -> dict[str, str]:
        return {}


async def test_metrics_count_what_this_engine_drove(tmp_path: pathlib.Path, sql_store: sql_store_.SqlStore):
    registry = metrics.Metrics()
    store = sql_store
    engine = engine_.Engine(store=store, executors={"local": fake.FakeExecutor({"b": fake.Outcome(exit_code=1)})},
                            logs=log_store.LogStore(tmp_path), secrets=_Secrets(), poll_interval=0.05)
    metrics.attach(engine, registry)
    metrics.attach(engine, registry)  # idempotent
    spec = specs.PipelineSpec.model_validate({"stages": [{"id": "a", "type": "shell", "command": "x"},
                                                         {"id": "b", "type": "shell", "command": "x"}]})
    pipeline = runs.Pipeline(name="p", spec=spec, source="api")
    run = await engine.submit(pipeline)
    final = await engine.execute(run.id)
    assert final.state is states.RunState.FAILED
    await registry.refresh(store=store, engine=engine)
    text = registry.render().decode()
    assert 'kubeline_runs_total{pipeline="p",status="failed"} 1.0' in text
    assert 'kubeline_run_errors_total{pipeline="p"} 1.0' in text
    assert 'kubeline_stage_duration_seconds_count{pipeline="p",status="succeeded"} 1.0' in text
    assert 'kubeline_stage_duration_seconds_count{pipeline="p",status="failed"} 1.0' in text
    assert "kubeline_queue_depth 0.0" in text
    metrics.set_scheduler_lag(2.5)
    assert "kubeline_scheduler_lag_seconds 2.5" in metrics.METRICS.render().decode()
