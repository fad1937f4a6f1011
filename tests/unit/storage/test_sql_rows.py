"""Row <-> record mapping and URL handling of the SQL adapter, without a database."""

from __future__ import annotations

import datetime as dt

import pytest
import sqlalchemy as sa

from kubeline.domain import runs, specs, states
from kubeline.storage.sql import engines, rows, tables

T0 = dt.datetime(2024, 3, 1, 8, 30, tzinfo=dt.UTC)


def rich_spec() -> specs.PipelineSpec:
    return specs.PipelineSpec.model_validate({
        "name": "sales",
        "max_instances": 2,
        "parallelism": 3,
        "env": [{"name": "A", "value": 1}, {"name": "B", "valueFrom": {"configMapKeyRef": {"name": "c", "key": "k"}}}],
        "encrypted_env": {"DB": "gAAAA-not-checked"},
        "secrets": ["TOKEN"],
        "retries": {"attempts": 3, "strategy": "custom", "delays": [1, 2, 3]},
        "resources": {"requests": {"cpu": "100m"}, "limits": {"memory": "1Gi"}},
        "schedules": [{"id": "nightly", "cron": "0 2 * * *", "start": "2024-01-01T00:00:00Z"},
                      {"interval": 60, "catchup": "all"}],
        "triggers": {"webhook": {"key": "k"}},
        "downstream": [{"pipeline": "report", "on": "always"}],
        "inputs": {"day": "string", "n": {"type": "integer", "default": 3}},
        "kubernetes": {"serviceAccountName": "runner", "nodeSelector": {"pool": "batch"}},
        "stages": [
            {"id": "fetch", "componentType": "http_request", "config": {"url": "http://127.0.0.1/x"}},
            {"id": "clean", "file": "clean.py", "dependsOn": "fetch", "inputMapping": {"raw": "${stages.fetch.outputs.body}"},
             "cells": {"1": {"retries": 2}}},
        ],
    })


def test_spec_survives_the_json_column() -> None:
    spec = rich_spec()
    assert rows.spec_from_json(rows.spec_to_json(spec)) == spec


def test_run_round_trip_and_max_instances_column() -> None:
    run = runs.Run(id=runs.new_id(), pipeline="sales", spec=rich_spec(), state=states.RunState.RUNNING,
                   inputs={"day": "x"}, triggered_by=runs.TriggeredBy(kind=runs.TriggerKind.WEBHOOK, detail="k"),
                   created_at=T0, started_at=T0, cancel_requested=True, outputs={"o": [1]}, route="r")
    row = rows.run_to_row(run)
    assert row["max_instances"] == 2 and row["state"] == "running" and row["triggered_by_kind"] == "webhook"
    assert set(row) == set(tables.runs.c.keys())
    assert rows.run_from_row(row) == run


def test_stage_attempt_pipeline_round_trips() -> None:
    stage = runs.StageRun(run_id="r", stage_id="s", state=states.StageState.RETRYING, attempts=2, retry_at=T0)
    row = rows.stage_to_row(stage, position=4)
    assert set(row) == set(tables.stage_runs.c.keys()) and row["position"] == 4
    assert rows.stage_from_row(row) == stage
    attempt = runs.Attempt(id="a", run_id="r", stage_id="s", number=2, executor="docker",
                           failure=states.FailureKind.START_FAILED, handle={"container": "c1"}, created_at=T0)
    row = rows.attempt_to_row(attempt)
    assert set(row) == set(tables.attempts.c.keys()) and row["failure"] == "start_failed"
    assert rows.attempt_from_row(row) == attempt
    pipeline = runs.Pipeline(name="sales", spec=rich_spec(), spec_hash="h", updated_at=T0)
    assert rows.pipeline_from_row(rows.pipeline_to_row(pipeline)) == pipeline


def test_invalid_stored_spec_is_refused_on_read() -> None:
    row = rows.run_to_row(runs.Run(id="r", pipeline="p", spec=rich_spec()))
    row["spec"] = {**row["spec"], "unknown_field": 1}
    with pytest.raises(ValueError, match="unknown_field"):
        rows.run_from_row(row)


def test_field_values_store_enum_values() -> None:
    assert rows.field_values({"failure": states.FailureKind.OOM, "exit_code": 1}) == {"failure": "oom", "exit_code": 1}


@pytest.mark.parametrize(("url", "driver"), [
    ("sqlite+aiosqlite:///x.db", "sqlite+pysqlite"),
    ("sqlite:///x.db", "sqlite+pysqlite"),
    ("postgresql://u@h/db", "postgresql+psycopg"),
    ("postgres://u@h/db", "postgresql+psycopg"),
    ("postgresql+psycopg://u@h/db", "postgresql+psycopg"),
])
def test_urls_get_the_driver_kubeline_uses(url: str, driver: str) -> None:
    assert engines.normalise_url(url).drivername == driver


def test_in_memory_detection() -> None:
    assert engines.is_memory(sa.make_url("sqlite+aiosqlite://"))
    assert engines.is_memory(sa.make_url("sqlite:///:memory:"))
    assert not engines.is_memory(sa.make_url("sqlite:////tmp/x.db"))


def test_utc_datetime_type_normalises() -> None:
    column = tables.UTCDateTime()
    sqlite = sa.create_engine("sqlite://").dialect
    postgres = sa.create_engine("postgresql+psycopg://u@127.0.0.1/db").dialect
    berlin = dt.datetime(2024, 1, 1, 12, tzinfo=dt.timezone(dt.timedelta(hours=1)))
    assert column.process_bind_param(berlin, sqlite) == dt.datetime(2024, 1, 1, 11)
    assert column.process_bind_param(berlin, postgres) == dt.datetime(2024, 1, 1, 11, tzinfo=dt.UTC)
    assert column.process_bind_param(dt.datetime(2024, 1, 1), sqlite) == dt.datetime(2024, 1, 1)
    assert column.process_result_value(dt.datetime(2024, 1, 1), sqlite) == dt.datetime(2024, 1, 1, tzinfo=dt.UTC)
    assert column.process_result_value(None, sqlite) is None
