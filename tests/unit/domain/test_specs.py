import json
import pathlib

import pydantic
import pytest

from kubeline.domain import specs

DESIGN_EXAMPLE = {
    "description": "Nightly sales import",
    "python_version": "3.11",
    "requirements": "requirements.txt",
    "timeout": 900,
    "retries": {"attempts": 3, "strategy": "exponential", "delay": 10, "max_delay": 300},
    "resources": {"requests": {"cpu": "100m", "memory": "256Mi"}, "limits": {"cpu": "1", "memory": "1Gi"}},
    "max_instances": 1,
    "parallelism": 4,
    "env": {"REGION": "eu"},
    "secrets": ["DB_PASSWORD"],
    "schedules": [{"cron": "0 2 * * *", "timezone": "Europe/Berlin", "inputs": {"day": "yesterday"}, "timeout": 1800}],
    "triggers": {"webhook": {"enabled": True}},
    "downstream": [{"pipeline": "report", "on": "success"}],
    "inputs": {"day": {"type": "string", "default": "today"}},
    "stages": [
        {"id": "fetch", "type": "http_request", "config": {"url": "https://example.org/data.json"}},
        {"id": "clean", "type": "python", "file": "clean.py", "dependsOn": ["fetch"],
         "inputs": {"raw": "${stages.fetch.outputs.body}"}},
        {"id": "report", "type": "notebook", "file": "report.ipynb", "dependsOn": ["clean"]},
    ],
}


def test_design_example_validates():
    spec = specs.PipelineSpec.model_validate(DESIGN_EXAMPLE)
    assert spec.stages[1].depends_on == ["fetch"]
    assert spec.retries.strategy is specs.RetryStrategy.EXPONENTIAL
    assert spec.resources.limits.memory_bytes == 2**30
    assert spec.schedules[0].timezone == "Europe/Berlin"


def test_camel_case_aliases_and_shorthands():
    spec = specs.PipelineSpec.model_validate({
        "retries": 2,
        "env": [{"name": "A", "value": "1"}, {"name": "B", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}}],
        "stages": [{"id": "a", "componentType": "json_transform", "inputMapping": {"x": 1}, "dependsOn": "b"},
                   {"id": "b"}],
    })
    assert spec.retries.attempts == 2
    assert spec.env["A"] == "1" and isinstance(spec.env["B"], specs.EnvFrom)
    assert spec.stages[0].type == "json_transform" and spec.stages[0].depends_on == ["b"]


@pytest.mark.parametrize(("patch", "message"), [
    ({"retires": 3}, "Extra inputs"),
    ({"schedules": [{"cron": "61 * * * *"}]}, "is not valid"),
    ({"schedules": [{"cron": "* * *"}]}, "expected 5"),
    ({"schedules": [{"cron": "* * * * *", "interval": 5}]}, "exactly one"),
    ({"schedules": [{"cron": "* * * * *", "timezone": "Mars/Base"}]}, "unknown time zone"),
    ({"resources": {"limits": {"cpu": "lots"}}}, "not a quantity"),
    ({"resources": {"requests": {"memory": "2Gi"}, "limits": {"memory": "1Gi"}}}, "above limits"),
    ({"stages": [{"id": "A b"}]}, "pattern"),
    ({"stages": [{"id": "a"}, {"id": "a"}]}, "used twice"),
    ({"retries": {"attempts": 2, "strategy": "custom"}}, "needs 'delays'"),
    ({"name": "../etc"}, "pattern"),
])
def test_bad_specs(patch, message):
    with pytest.raises(pydantic.ValidationError, match=message):
        specs.PipelineSpec.model_validate(patch)


def test_fastflow_pipeline_json_is_read_unmodified():
    spec = specs.PipelineSpec.model_validate({
        "type": "script", "enabled": True, "description": "d", "tags": ["x"], "python_version": "3.12",
        "timeout": 0, "cpu_hard_limit": 0.5, "mem_hard_limit": "512m", "cpu_soft_limit": 0.25,
        "mem_soft_limit": "256m", "retry_attempts": 2,
        "retry_strategy": {"type": "exponential_backoff", "initial_delay": 1, "max_delay": 8, "multiplier": 3},
        "default_env": {"A": "1"}, "encrypted_env": {"B": "gAAAA"}, "secrets": ["S"],
        "schedule_cron": "*/5 * * * *", "schedule_start": "2026-01-01T00:00:00Z", "webhook_key": "hook",
        "restart_on_crash": True, "restart_cooldown": 30, "max_instances": 2,
        "downstream_triggers": [{"pipeline": "b", "on_success": True, "on_failure": True},
                                {"pipeline": "c", "on_route": "big", "run_config_id": "nightly"}],
        "cells": {"2": {"retries": 1, "delay_seconds": 5}},
    })
    assert spec.timeout is None
    assert spec.resources.limits.cpu == "0.5" and spec.resources.limits.memory == "512Mi"
    assert spec.resources.soft_limits.memory == "256Mi"
    assert spec.retries.attempts == 2 and spec.retries.strategy is specs.RetryStrategy.EXPONENTIAL
    assert (spec.retries.delay, spec.retries.max_delay, spec.retries.multiplier) == (1, 8, 3)
    assert spec.env == {"A": "1"}
    assert spec.schedules[0].cron == "*/5 * * * *" and spec.schedules[0].start is not None
    assert spec.triggers.webhook is not None and spec.triggers.webhook.key == "hook"
    assert spec.restart.on_crash and spec.restart.cooldown == 30
    assert [(d.pipeline, d.on, d.route, d.schedule) for d in spec.downstream] == [
        ("b", "always", None, None), ("c", "success", "big", "nightly")]
    assert spec.cells[2].retries == 1


def test_fastflow_schedules_list_wins_and_maps_run_configs():
    spec = specs.PipelineSpec.model_validate({
        "schedule_cron": "0 1 * * *",
        "schedules": [{"id": "nightly", "schedule_cron": "0 2 * * *", "default_env": {"X": "1"},
                       "mem_hard_limit": "1g", "retry_attempts": 1, "timeout": 60, "webhook_key": "n"}],
    })
    assert len(spec.schedules) == 1
    nightly = spec.schedules[0]
    assert nightly.cron == "0 2 * * *" and nightly.env == {"X": "1"}
    assert nightly.resources is not None and nightly.resources.limits.memory == "1Gi"
    assert nightly.retries is not None and nightly.retries.attempts == 1


def test_both_spellings_is_an_error():
    with pytest.raises(pydantic.ValidationError, match="both given"):
        specs.PipelineSpec.model_validate({"retries": 1, "retry_attempts": 2})


def test_exported_schema_is_current():
    path = pathlib.Path(__file__).parents[3] / "docs" / "pipeline.schema.json"
    assert json.loads(path.read_text()) == specs.json_schema(), "run scripts/gen-schema"
    assert "retry_attempts" in specs.json_schema()["properties"]
