"""What the access check read for a request is not read again by the route: ``POST /api/v1/runs``
reads the pipeline once, ``GET /api/v1/runs/{id}`` the run once (each query is a round trip
per call on PostgreSQL)."""

from __future__ import annotations

import re
import time
from typing import Any

import httpx

from kubeline import testing

_ONE_PIPELINE = re.compile(r"FROM pipelines\s+WHERE pipelines\.name =")
_ONE_RUN = re.compile(r"FROM runs\s+WHERE runs\.id =")


def _wait_final(http: httpx.Client, run_id: str) -> None:
    """Runs end before the server stops (a stage still running at shutdown is not this test's subject)."""
    deadline = time.monotonic() + 60
    while http.get(f"/api/v1/runs/{run_id}").json()["state"] not in ("succeeded", "failed", "cancelled", "timed_out"):
        assert time.monotonic() < deadline, f"run {run_id} did not end within 60 s"
        time.sleep(0.05)


def test_a_post_reads_the_pipeline_once(server: testing.ServerThread, http: httpx.Client,
                                        statements: Any) -> None:
    first = http.post("/api/v1/runs", json={"pipeline": "hello"})  # warm: first token use etc.
    first.raise_for_status()
    statements.clear()
    created = http.post("/api/v1/runs", json={"pipeline": "hello", "inputs": {"count": 1}})
    assert created.status_code == 201, created.text
    assert statements.count(_ONE_PIPELINE) == 1
    for run_id in (first.json()["id"], created.json()["id"]):
        _wait_final(http, run_id)


def test_a_get_reads_the_run_once(server: testing.ServerThread, http: httpx.Client,
                                  statements: Any) -> None:
    run_id = http.post("/api/v1/runs", json={"pipeline": "hello"}).json()["id"]
    _wait_final(http, run_id)
    statements.clear()
    got = http.get(f"/api/v1/runs/{run_id}")
    assert got.status_code == 200 and got.json()["id"] == run_id
    assert statements.count(_ONE_RUN) == 1
